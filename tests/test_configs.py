"""Every file of every config group composes with train.yaml and instantiates; bad configs fail clearly."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from dapo_lab.build import build_components, instantiate, resolve_decode_dtype
from dapo_lab.rollout.hf import cpu_has_bf16

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("clip", "loss", "advantage", "kl", "overlong", "sampling", "reward", "rollout", "model", "data")
NEEDS = {("reward", "custom"): ["reward.fn=operator:eq"]}
CASES = [(group, f.stem) for group in GROUPS for f in sorted((CONF / group).glob("*.yaml"))]


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_instantiates(group, option):
    if (group, option) == ("rollout", "vllm") and importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM not installed: tests/rollout checks the clear install error instead")
    cfg = compose_train(f"{group}={option}", *NEEDS.get((group, option), []))
    node = resolve_decode_dtype(cfg.rollout, cfg.trainer) if group == "rollout" else cfg[group]  # as build does
    obj = instantiate(node)  # constructs only: models and datasets load later, in .load()/.train_examples()
    assert type(obj).__name__ == cfg[group]._target_.rsplit(".", 1)[1]
    for key, value in node.items():  # YAML keys are spelled exactly like the constructor's arguments
        if key != "_target_" and not isinstance(getattr(obj, key), dict):
            assert getattr(obj, key) == value, key
    if hasattr(obj, "close"):
        obj.close()


def test_every_group_has_options():
    assert all(len([c for c in CASES if c[0] == g]) >= 1 for g in GROUPS)
    assert len([c for c in CASES if c[0] in GROUPS[:6]]) >= 15


def test_default_is_dapo():
    cfg = compose_train()
    assert [cfg[g]._target_.rsplit(".", 1)[1] for g in ("clip", "loss", "overlong", "sampling", "kl")] == [
        "DecoupledClip", "TokenMean", "SoftOverlongPunishment", "DynamicSampling", "NoKL"]


@pytest.mark.parametrize(
    "overrides,match",
    [(["batch.mini_batch_prompts=3"], "mini_batch_prompts=3 must divide"),
     (["clip.eps_high=-0.1"], "eps_high"),
     (["overlong_cache_len=200"], "cache_len=200"),
     (["overlong.max_len=1000"], "exceeds generation.max_new_tokens"),
     (["batch.group_size=1"], "group_size"),
     (["generation.top_p=0"], "top_p"),
     (["sampling.max_gen_batches=0"], "max_gen_batches")],
)
def test_inconsistent_config_fails_before_loading_anything(overrides, match):
    cfg = compose_train(*overrides)
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        build_components(cfg)


def test_mistyped_option_is_hydras_clear_error():
    with pytest.raises(ConfigCompositionException, match="clip"):
        compose_train("clip=highr")


def test_paper_scale_composes_and_validates():
    cfg = compose_train("scale=paper", "experiment=dapo")
    parts = build_components(cfg)
    assert (parts["clip"].eps_low, parts["clip"].eps_high) == (0.2, 0.28)
    assert (parts["overlong"].max_len, parts["overlong"].cache_len) == (20480, 4096)
    batch = parts["batch"]
    assert (batch.group_size, batch.prompts_per_step, batch.updates_per_step) == (16, 512, 16)
    assert parts["optim"].lr == 1e-6 and (parts["evaluation"].k, parts["evaluation"].top_p) == (32, 0.7)
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-32B"
    assert cfg.data.train_path.endswith("dapo-math-17k.distinct.parquet")


@pytest.mark.parametrize("sweep, scale", [("ablation", "cpu_ablation"), ("headline", "cpu")])
def test_sweep_directory_resolves_before_any_job_starts(sweep, scale):
    # The basic sweeper reads hydra.sweep.dir before HydraConfig is set: a ${hydra:...} resolver there failed
    # `python train.py -m sweep=ablation` at its start ("HydraConfig was not set"); the tests had always set the dir.
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"sweep={sweep}"], return_hydra_config=True)
    assert cfg.hydra.sweep.dir == f"multirun/{sweep}/{scale}"


def test_headline_sweep_runs_dapo_and_grpo_over_three_seeds_with_nine_evaluations():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["sweep=headline"], return_hydra_config=True)
    assert (cfg.hydra.sweeper.params.experiment, cfg.hydra.sweeper.params.seed) == ("dapo,grpo", "1,2,3")
    assert cfg.resume == "auto" and cfg.trainer.max_steps // cfg.evaluation.every + 1 >= 9


def test_clip_higher_sweep_crosses_updates_per_step_with_both_clips_on_row_4():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["sweep=clip_higher"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert (params.seed, params["batch.mini_batch_prompts"], params.clip) == ("1,2,3", "16,4,1", "symmetric,higher")
    assert cfg.hydra.sweep.dir == "multirun/clip_higher/cpu" and cfg.resume == "auto"
    row4 = build_components(compose_train("experiment=ablation/4_token_loss"))
    for mini, updates in ((16, 1), (4, 4), (1, 16)):
        for clip, eps_high in (("symmetric", 0.2), ("higher", 0.28)):
            parts = build_components(compose_train("sweep=clip_higher", f"batch.mini_batch_prompts={mini}",
                                                   f"clip={clip}"))
            assert parts["batch"].updates_per_step == updates
            decoupled = parts["clip"].as_decoupled() if clip == "symmetric" else parts["clip"]
            assert (decoupled.eps_low, decoupled.eps_high) == (0.2, eps_high)
            for name in ("loss", "overlong", "sampling", "advantage", "kl"):
                assert parts[name] == row4[name], name
            assert parts["generation"].temperature == 1.0 and parts["evaluation"].interim_prompts == 128


def test_ablation_sweep_composes_every_row_at_cpu_ablation_scale():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["sweep=ablation"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = cfg.hydra.sweeper.params
    rows = params.experiment.split(",")
    assert rows == [f"ablation/{f.stem}" for f in sorted((CONF / "experiment" / "ablation").glob("*.yaml"))
                    if f.stem != "3_soft_overlong_only"]
    assert params.seed == "1,2,3" and list(params) == ["seed", "experiment"]  # seed outermost: whole seeds first
    default = build_components(compose_train())
    for row in rows:
        cfg = compose_train("sweep=ablation", f"experiment={row}")
        parts = build_components(cfg)
        batch = parts["batch"]
        assert (batch.group_size, batch.prompts_per_step, batch.updates_per_step) == (8, 16, 4)
        assert parts["generation"].max_new_tokens == 96 and parts["evaluation"].max_prompts == 500
        # The default run's training settings (where naive GRPO learns), 80 steps, 9 evaluation points.
        for name in ("generation", "optim", "rollout_correction"):
            assert parts[name] == default[name], name
        # Fixed passes, as the recorded sweep ran (the default's token budget gives the same gradient).
        assert batch == dataclasses.replace(default["batch"], max_tokens_per_micro_batch=None)
        assert cfg.trainer.max_steps == 80 and cfg.trainer.max_steps // parts["evaluation"].every + 1 == 9
        assert parts["evaluation"].interim_prompts == 128


def test_the_first_ablation_scale_still_composes_as_recorded():
    parts = build_components(compose_train("sweep=ablation", "scale=cpu_ablation_20", "experiment=ablation/0_grpo"))
    assert parts["generation"].temperature == 1.0 and parts["rollout_correction"].old_logprobs == "recompute"
    assert parts["optim"].decay == "constant" and parts["evaluation"].interim_prompts is None


def test_default_run_settings():
    parts = build_components(compose_train())
    # auto: the HF engine decodes a bf16 copy of the training weights (on a CPU with bf16 kernels), whose log-probs
    # serve as π_old.
    assert parts["generation"].temperature == 0.8 and parts["rollout_correction"].old_logprobs == "auto"
    assert parts["rollout"].dtype == ("bf16" if cpu_has_bf16() else None)
    assert parts["rollout_correction"].resolve(parts["rollout"].logprobs_match_trainer) == "engine"
    assert (parts["optim"].decay, parts["optim"].min_lr_ratio) == ("cosine", 0.1)
    assert compose_train().trainer.max_steps == 80 and parts["evaluation"].every == 40
    paper = build_components(compose_train("scale=paper"))
    assert paper["generation"].temperature == 1.0 and paper["rollout_correction"].old_logprobs == "recompute"
    assert paper["optim"].decay == "constant"


@pytest.mark.parametrize("overrides,dtype", [
    ([], "bf16"),  # one CPU process under bf16-mixed: a bf16 copy decodes
    (["trainer=cpu_ddp"], None), (["trainer=cpu_fsdp"], None), (["trainer=cpu_deepspeed_zero3"], None),
    (["trainer=gpu_ddp"], None), (["trainer=gpu_fsdp"], None), (["trainer.devices=2"], None),
    (["trainer.num_nodes=2"], None), (["trainer.accelerator=gpu"], None),
    (["trainer.precision=32-true"], None), (["trainer.precision=bf16-true"], None),
    (["rollout.autocast=bf16"], None),  # an autocast decode of the policy itself, as asked
    (["rollout.dtype=fp32"], "fp32"), (["trainer=cpu_fsdp", "rollout.dtype=bf16"], "bf16"),  # as asked
    (["scale=cpu_ablation"], None), (["sweep=ablation", "scale=cpu_ablation_20"], None),  # as their sweeps ran
])
def test_the_engines_auto_dtype_is_a_bf16_copy_only_for_one_cpu_process(overrides, dtype, monkeypatch):
    monkeypatch.setattr("dapo_lab.rollout.hf.cpu_has_bf16", lambda: True)  # as on the CPUs this was measured on
    parts = build_components(compose_train(*overrides))
    assert parts["rollout"].dtype == dtype
    exact = parts["rollout"].logprobs_match_trainer
    recompute = "autocast" in str(overrides) or "scale=cpu_ablation_20" in overrides  # that scale pins recompute
    assert parts["rollout_correction"].resolve(exact) == ("recompute" if recompute else "engine")


def test_a_cpu_without_native_bf16_decodes_the_policy_itself(monkeypatch):
    monkeypatch.setattr("dapo_lab.rollout.hf.cpu_has_bf16", lambda: False)  # bf16 matmuls emulated: slower than fp32
    parts = build_components(compose_train())
    assert parts["rollout"].dtype is None
    assert parts["rollout_correction"].resolve(parts["rollout"].logprobs_match_trainer) == "engine"


def test_the_auto_dtype_leaves_other_engines_alone():
    cfg = compose_train("rollout=vllm", "scale=cpu_ablation")
    assert resolve_decode_dtype(compose_train("rollout=vllm").rollout, cfg.trainer).dtype == "auto"  # vLLM's own
    assert cfg.rollout.dtype is None  # the ablation pins null: vLLM reads it as its auto (the policy's dtype)


def test_scale_overrides_need_no_engine_field():
    """The loss settings live in rollout_correction, not on the engine: a scale that pins them composes with any
    engine, including one without such fields (here: the vLLM config, whose engine may not even be installed)."""
    cfg = compose_train("scale=paper", "rollout=vllm")
    assert "old_logprobs" not in cfg.rollout and "tis_cap" not in cfg.rollout
    assert cfg.rollout_correction.old_logprobs == "recompute"


def test_command_line_scale_wins_over_the_sweeps_scale():
    parts = build_components(compose_train("sweep=ablation", "scale=paper", "experiment=ablation/5_dapo"))
    assert parts["batch"].prompts_per_step == 512 and parts["optim"].lr == 1e-6


@pytest.mark.parametrize("overrides", [[], ["sweep=ablation", "experiment=ablation/5_dapo"]],
                         ids=["default", "ablation"])
def test_soft_punishment_spares_every_correct_solution_that_fits(overrides):
    # Eq. 13 penalises |y| > L_max - L_cache. A correct solution of the embedded task has a fixed length (one
    # line per term, byte tokens, plus eos); any that fits in L_max must end before the buffer starts, or the
    # punishment teaches the policy to cut correct reasoning short.
    from dapo_lab.data.task import worked_solution
    from dapo_lab.models.tokenizer import build_byte_tokenizer

    parts = build_components(compose_train(*overrides))
    soft, task, tok = parts["overlong"], instantiate(compose_train(*overrides).data), build_byte_tokenizer()
    lengths = [len(tok(worked_solution(t), add_special_tokens=False)["input_ids"]) + 1 for t in task.eval_problems]
    fitting = [n for n in lengths if n <= soft.max_len]
    assert max(fitting) <= soft.max_len - soft.cache_len
    assert 0.05 < sum(n > soft.max_len for n in lengths) / len(lengths) < 0.3  # the limit still binds on some


TRAINERS = sorted(f.stem for f in (CONF / "trainer").glob("*.yaml"))


@pytest.mark.parametrize("option", TRAINERS)
def test_every_trainer_option_builds_its_strategy(option):
    """Each trainer= option composes and its strategy constructs (GPU ones too: nothing touches a device here)."""
    from dapo_lab.trainer.strategy import DeepSpeedZeROStrategy, FSDP2Strategy, GradSyncDDPStrategy

    if "deepspeed" in option and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed not installed")
    cfg = compose_train(f"trainer={option}", "trainer.num_nodes=2")
    strategy = cfg.trainer.strategy if isinstance(cfg.trainer.strategy, str) else instantiate(cfg.trainer.strategy)
    expected = {"ddp": GradSyncDDPStrategy, "fsdp": FSDP2Strategy, "deepspeed": DeepSpeedZeROStrategy}
    kind = next((k for k in expected if k in option), None)
    assert strategy == "auto" if kind is None else isinstance(strategy, expected[kind])
    assert cfg.trainer.accelerator == ("gpu" if option.startswith("gpu") else "cpu") and cfg.trainer.num_nodes == 2
    if kind == "deepspeed":
        assert strategy.config["zero_optimization"]["stage"] == int(option[-1])
        assert strategy.config["gradient_clipping"] == cfg.optim.grad_clip


def test_paper_scale_shards_with_fsdp2_in_bf16():
    cfg = compose_train("scale=paper")
    strategy = instantiate(cfg.trainer.strategy)
    assert type(strategy).__name__ == "FSDP2Strategy" and (strategy.param_dtype, strategy.reduce_dtype) == (
        "bf16", "fp32")


@pytest.mark.parametrize("scale, processes", [("paper_4x8", 32), ("qwen7b_1x8", 8)])
def test_cluster_recipes_compose_validate_and_give_the_papers_batch(scale, processes):
    """The 32B-on-4-nodes and 7B-on-one-node recipes: valid, and their per-process batch.* make the paper's step
    (512 prompts x 16 responses, 16 updates) over their processes. Without vLLM installed here, a stand-in with the
    engine's settings takes its place (the engine itself only checks that vLLM imports)."""
    from types import SimpleNamespace

    cfg = compose_train("experiment=dapo", f"scale={scale}")
    assert cfg.trainer.devices * cfg.trainer.num_nodes == processes
    replace = {}
    if importlib.util.find_spec("vllm") is None:
        settings = {k: v for k, v in cfg.rollout.items() if k != "_target_"}
        replace["rollout"] = SimpleNamespace(**settings, logprobs_match_trainer=False, decodes_with_policy=False)
    parts = build_components(cfg, **replace)
    batch, tp = parts["batch"], cfg.rollout.tensor_parallel_size
    assert batch.prompts_per_step * processes == 512 and batch.group_size == 16 and batch.updates_per_step == 16
    assert batch.gen_prompts * (processes // tp) == 1536  # verl's gen_batch_size, per engine here
    assert batch.logprob_chunk_tokens == 1024 and cfg.trainer.strategy.activation_checkpointing
    assert cfg.rollout.enable_sleep_mode and cfg.rollout.distributed_executor_backend == "external_launcher"
    assert parts["rollout_correction"].resolve(False) == "recompute"
