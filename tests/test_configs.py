"""Every file of every component group composes with train.yaml and instantiates to its class."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

CONF = Path(__file__).resolve().parents[1] / "conf"
ALGO_GROUPS = ("clip", "loss", "advantage", "kl", "overlong", "sampling")
CASES = [(group, f.stem) for group in ALGO_GROUPS for f in sorted((CONF / group).glob("*.yaml"))]


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_instantiates(group, option):
    cfg = compose_train(f"{group}={option}")
    obj = instantiate(cfg[group])
    assert type(obj).__name__ == cfg[group]._target_.rsplit(".", 1)[1]
    # YAML keys are spelled exactly like the constructor's arguments.
    for key, value in cfg[group].items():
        if key != "_target_":
            assert getattr(obj, key) == value


def test_every_group_has_options():
    assert all(len([c for c in CASES if c[0] == g]) >= 2 for g in ALGO_GROUPS)
