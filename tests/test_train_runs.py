"""2-step real runs through the whole Hydra path (compose -> build -> Lightning), one per component option."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from dapo_lab.run import main

CONF = Path(__file__).resolve().parents[1] / "conf"
OPTIONS = ["clip=symmetric", "loss=sample", "loss=seq_token_sum", "loss=dr_grpo", "advantage=dr_grpo",
           "kl=k1_reward", "kl=k3_loss", "overlong=none", "overlong=filter", "overlong=filter_soft", "sampling=none",
           "experiment=grpo", "experiment=dapo", "model.compile=aot_eager"]


def run(tmp_path: Path, *overrides: str) -> pd.DataFrame:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        # parity_reward: a content-based reward that makes an untrained model's groups informative.
        cfg = compose(config_name="train", overrides=["debug=tiny", f"+output_dir={tmp_path}", "reward=custom",
                                                      "reward.fn=helpers:parity_reward", *overrides])
    main(cfg)
    return pd.read_csv(tmp_path / "csv" / "metrics.csv")


@pytest.mark.parametrize("option", OPTIONS)
def test_two_step_run(tmp_path, option):
    df = run(tmp_path, option)
    train = df[df["actor/num_updates"].notna()]
    assert train["step"].tolist() == [1, 2]
    evals = df[df["eval/avg@2"].notna()]
    assert evals["step"].tolist() == [0, 2]  # the starting point, then after the last step
    assert train["train/entropy"].gt(0).all()
    if option.startswith("kl=k3"):
        assert train["actor/kl_loss"].notna().all()
    assert (tmp_path / "policy" / "model.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_default_run_logs_only_documented_metrics(tmp_path):
    df = run(tmp_path)
    readme = (CONF.parent / "README.md").read_text()
    undocumented = [name for name in df.columns if "/" in name and f"`{name}`" not in readme
                    and not name.startswith(("reward/", "eval/"))]
    assert undocumented == []
    assert df["sampling/num_gen_batches"].dropna().ge(1).all()
