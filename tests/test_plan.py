"""The memory plan (``python -m dapo_lab.plan``): its formulas on hand-computed cases, its activation count against
the autograd graph of the tiny model (exact), its whole prediction against the peak RSS of a real step, and the
committed example outputs against what the CLI prints now."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dapo_lab import plan_memory as pm
from dapo_lab.models.tiny import build_tiny
from dapo_lab.plan import Cluster, compose, main, make_plan, micro_rows, training_setup
from dapo_lab.plan_measure import saved_tensor_bytes
from dapo_lab.plan_model import QWEN25, ModelDims, from_hf_config, linear_params, model_dims, param_count

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "experiments" / "plan").glob("*.md"))
MiB = 2**20
AUTOCAST, BF16, FP32 = pm.Numerics(4, 2, 4, True, 8), pm.Numerics(2, 2, 2, False, 4), pm.Numerics(4, 4, 4, False, 8)
DIMS = [{}, dict(hidden_size=64, num_layers=1, intermediate_size=128),
        dict(hidden_size=96, num_layers=3, num_heads=6, num_kv_heads=2, intermediate_size=200),
        dict(hidden_size=128, num_layers=2, num_heads=8, num_kv_heads=8, intermediate_size=344),
        dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=1, intermediate_size=128)]


def dims_of(model: torch.nn.Module) -> ModelDims:
    return from_hf_config(model.config.to_dict(), "tiny", "test")


# ---------------------------------------------------------------- (a) formulas
@pytest.mark.parametrize("dims", DIMS)
def test_param_count_is_the_models(dims):
    model = build_tiny(**dims)[0]
    assert param_count(dims_of(model)) == sum(p.numel() for p in model.parameters())


def test_qwen25_table_matches_the_published_totals():
    # The totals of the models' safetensors indexes (the model cards round them: 0.49B, 1.54B, 7.61B, 32.8B).
    published = {"0.5B": 494_032_768, "1.5B": 1_543_714_304, "7B": 7_615_616_512, "32B": 32_763_876_352}
    assert {k: param_count(d) for k, d in QWEN25.items()} == published
    assert (QWEN25["32B"].head_dim, QWEN25["7B"].kv_hidden, QWEN25["1.5B"].tied) == (128, 512, True)


def test_hand_computed_cases():
    d = ModelDims("t", 256, 4, 4, 2, 688, 320, False)  # the tiny default, s = 158
    assert pm.layer_activation_bytes(d, 158, AUTOCAST, "eager") == 34 * 256 + 8 * 688 + 6 * 4 * 158 + 8
    assert pm.layer_activation_bytes(d, 158, BF16, "eager") == 24 * 256 + 8 * 688 + 6 * 4 * 158 + 8
    assert pm.layer_activation_bytes(d, 158, FP32, "eager") == 40 * 256 + 16 * 688 + 4 * 4 * 158 + 8
    # bf16 sdpa, causal with no mask: norms 12h+8, linears 6h+2i, SwiGLU 6i, q 2h, k and v at 2 of 4 heads 2h, lse 4a
    assert pm.layer_activation_bytes(d, 158, BF16, "sdpa") == 22 * 256 + 8 * 688 + 4 * 4 + 8
    assert pm.logits_peak_bytes(32, 96, 320) == 4 * 32 * 96 * 320 * 4
    assert pm.kv_cache_bytes(QWEN25["7B"], 10, 1000, 2, 8) == 10 * 1000 * 28 * 2 * 1 * 128 * 2  # 4 KV heads, TP 8
    psi = 1_000_000
    rows = pm.state_rows(d, psi, pm.Sharding("replicated", 1), AUTOCAST)
    assert [b for _, _, b in rows] == [4 * psi, 4 * psi, 8 * psi, 2 * linear_params(d)]
    zero2 = pm.state_rows(d, psi, pm.Sharding("zero", 4, stage=2), pm.Numerics(4, 2, 2, False, 12))
    assert [b for _, _, b in zero2][:3] == [2 * psi, 2 * psi // 4, 12 * psi // 4]
    fsdp = pm.state_rows(d, psi, pm.Sharding("fsdp2", 4, param_offload=True), BF16)
    assert [b for _, _, b in fsdp][:3] == [0, 0, 0]  # cpu_offload: shards and optimizer state in host memory
    assert pm.max_rows(100, 30) == 3 and pm.max_rows(10, 30) == 0


@pytest.mark.parametrize("regime", ["autocast", "bf16", "fp32"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("dims", DIMS[:1] + DIMS[2:])
def test_activation_count_is_what_autograd_saves(dims, attention, regime):
    """Exact up to a few scalars: every saved tensor of the layers, the logits' and autocast's weight copies."""
    model = build_tiny(**dims)[0]
    model.config._attn_implementation = attention
    model = (model.to(torch.bfloat16) if regime == "bf16" else model).train()
    d, n = dims_of(model), {"autocast": AUTOCAST, "bf16": BF16, "fp32": FP32}[regime]
    lens, rows, response = [30, 22, 27, 25], 4, 40  # unequal prompts: padding, so a mask, as in training
    got = saved_tensor_bytes(model, [[5] * p for p in lens], torch.randint(1, 250, (rows, response)),
                             autocast=regime == "autocast")
    logits = rows * response * (d.vocab * 4 + 4 + 8)  # the fp32 logits log-softmax saves, its result, gather's index
    # autocast's cast copies of the weights (their biases are cast too, but no backward saves them)
    casts = 2 * (linear_params(d) - d.layers * (d.hidden + 2 * d.kv_hidden)) if n.autocast else 0
    acts = pm.activation_bytes(d, rows, max(lens) + response, n, attention, False, kept=response)
    expected = acts + logits + casts
    assert 0 <= got - expected <= 64, (got, expected)


def test_training_setup_reads_the_strategy_node():
    cases = {"trainer=cpu": ("replicated", 4, 2, True), "trainer=gpu_fsdp": ("fsdp2", 4, 2, False),
             "trainer=gpu_deepspeed_zero2": ("zero", 4, 2, False), "trainer=gpu_ddp": ("replicated", 4, 2, True)}
    for override, (kind, master, compute, autocast) in cases.items():
        n, s, _ = training_setup(compose([override]), 8)
        assert (s.kind, n.master, n.compute, n.autocast) == (kind, master, compute, autocast), override
    # A bf16 model under FSDP2 with param_dtype=bf16: upcast to fp32 master weights (and fp32 AdamW), bf16 compute.
    n, s, _ = training_setup(compose(["scale=paper"]), 32)
    assert (s.kind, s.world, n.master, n.optimizer, s.compute_bytes) == ("fsdp2", 32, 4, 8, 2)
    n, s, _ = training_setup(compose(["scale=paper", "trainer.strategy.param_dtype=null"]), 32)
    assert (n.master, n.optimizer, s.compute_bytes) == (2, 4, 2)  # no mixed precision: bf16 throughout
    n, s, _ = training_setup(compose(["trainer=gpu_deepspeed_zero3"]), 8)
    assert (s.stage, n.optimizer) == (3, 12)


def test_micro_batch_rows():
    cfg = compose([])  # the default's budget of 2600 tokens: 16 rows of 158 (a plan takes every row at full length)
    assert micro_rows(cfg, 158) == (16, "batch.max_tokens_per_micro_batch // (P + R)")
    assert micro_rows(compose(["batch.max_tokens_per_micro_batch=null"]), 158) == (
        32, "a rank's mini-batch (mini_batch_prompts × group_size)")
    assert micro_rows(compose(["batch.max_tokens_per_micro_batch=1000"]), 158)[0] == 6
    assert micro_rows(compose(["scale=paper"]), 22528)[0] == 4


def test_model_dims_from_a_local_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "intermediate_size": 4864, "vocab_size": 151936, "tie_word_embeddings": True}))
    d = model_dims({"_target_": "dapo_lab.models.spec.PretrainedModel", "name_or_path": str(tmp_path)})
    assert param_count(d) == param_count(QWEN25["0.5B"]) and d.source.endswith("config.json")
    with pytest.raises(ValueError, match="no local config.json"):
        model_dims({"name_or_path": "someone/unknown-7b"})


# ---------------------------------------------------------------- (b) against a measured step
def measured(env: dict[str, str], **kwargs) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "dapo_lab.plan_measure", json.dumps(kwargs)], capture_output=True,
                         text=True, env={**os.environ, **env}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["first_peak"] > result["baseline_peak_above_rss"]  # the step's peak rose above any earlier one
    return result


# glibc's default malloc keeps freed blocks in its heap (its mmap threshold rises to the size of the first large
# block freed): RSS then keeps every temporary's hole. A fixed threshold returns each large block to the OS on free,
# so RSS follows the live tensors, which is what the plan predicts (and what a GPU's max_memory_allocated counts).
LIVE = {"MALLOC_MMAP_THRESHOLD_": "131072"}
PROMPTS = [62, 38, 46, 54, 42, 58, 50]  # the task's prompt lengths (2-8 terms); the longest sets P


def predicted(d: ModelDims, rows: int, seq: int, response: int, attention: str, ckpt: bool) -> tuple[float, float]:
    """(first step, steady state) in MiB: the first forward/backward has no gradients or AdamW state yet. The
    measured step, like the default run's first epoch, also measures the entropy from its logits."""
    states = {k: b for k, _, b in pm.state_rows(d, param_count(d), pm.Sharding("replicated", 1), AUTOCAST)}
    logits = pm.logits_peak_bytes(rows, response, d.vocab, response, pm.ENTROPY_CHUNK)
    batch = pm.activation_bytes(d, rows, seq, AUTOCAST, attention, ckpt, kept=response) + logits
    steady = sum(states.values()) + batch
    return (steady - states["gradients"] - states["AdamW state"]) / MiB, steady / MiB


@pytest.mark.parametrize("overrides", [[], ["batch.mini_batch_prompts=8", "model.gradient_checkpointing=true"]],
                         ids=["default", "64rows-checkpointing"])
def test_plan_within_20_percent_of_the_measured_peak(overrides):
    plan = make_plan(compose(overrides), Cluster(1, 1))
    first, steady = predicted(plan.dims, plan.rows, plan.seq, plan.response, plan.attention, plan.checkpointing)
    assert steady == pytest.approx(plan.train_peak() / MiB)  # the plan's printed number
    m = measured(LIVE, rows=plan.rows, prompt_lens=PROMPTS, response_len=plan.response, attention=plan.attention,
                 checkpointing=plan.checkpointing)
    print(f"{overrides}: first step {m['first_peak']:.0f} MiB measured vs {first:.0f} predicted; "
          f"steady {m['steady_peak']:.0f} vs {steady:.0f}")
    assert m["first_peak"] == pytest.approx(first, rel=0.2)
    assert m["steady_peak"] == pytest.approx(steady, rel=0.2)


def test_logits_term_at_a_large_vocabulary():
    """A 4096-token vocabulary makes the logits half of the step: their term is measured, not assumed."""
    model = build_tiny(vocab_multiple=4096)[0]
    d = dims_of(model)
    first, steady = predicted(d, 32, 62 + 96, 96, "eager", False)
    m = measured(LIVE, rows=32, prompt_lens=PROMPTS, response_len=96, dims={"vocab_multiple": 4096})
    print(f"V=4096: first {m['first_peak']:.0f} vs {first:.0f}; steady {m['steady_peak']:.0f} vs {steady:.0f}")
    assert pm.logits_peak_bytes(32, 96, d.vocab, 96, pm.ENTROPY_CHUNK) / MiB / steady > 0.4
    assert m["first_peak"] == pytest.approx(first, rel=0.2) and m["steady_peak"] == pytest.approx(steady, rel=0.2)


def test_default_allocator_gap_is_heap_held_free():
    """With glibc's defaults the process peak is far above the plan; the gap is memory malloc holds free: RSS after
    the forward less mallinfo2's free bytes is the RSS of the same forward under the fixed threshold."""
    kwargs = dict(rows=32, prompt_lens=PROMPTS, response_len=96)
    glibc, live = measured({}, **kwargs), measured(LIVE, **kwargs)
    first, steady = predicted(ModelDims("t", 256, 4, 4, 2, 688, 320, False), 32, 158, 96, "eager", False)
    print(f"glibc defaults: first {glibc['first_peak']:.0f} / steady {glibc['steady_peak']:.0f} MiB against "
          f"{first:.0f} / {steady:.0f} predicted; after the forward {glibc['after_forward']:.0f} of which "
          f"{glibc['heap_free_after_forward']:.0f} held free (fixed threshold: {live['after_forward']:.0f})")
    assert glibc["after_forward"] - glibc["heap_free_after_forward"] == pytest.approx(live["after_forward"], rel=0.05)
    assert glibc["first_peak"] > first


# ---------------------------------------------------------------- (c) the committed examples
def test_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"paper_32b_4x8.md", "paper_32b_16x8.md", "qwen7b_1x8.md"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_what_the_cli_prints(path, capsys):
    text = path.read_text()
    command = text.splitlines()[0].removeprefix("Command: `").removesuffix("`")
    prefix = "python -m dapo_lab.plan "
    assert command.startswith(prefix), text.splitlines()[0]
    main(command.removeprefix(prefix).split())
    assert capsys.readouterr().out == text, f"regenerate {path.name}: {command} > {path.relative_to(ROOT)}"


def test_a_round_is_sized_for_oversampling_when_it_is_on():
    """The engine's rows per round: gen_prompts × G, or with adaptive oversampling up to max_round_prompts × G,
    at most max_num_seqs (256 unless set); the paper's fixed 1536-prompt rounds stay as they were."""
    from dapo_lab.algo.sampling import ROUND_CAP_FACTOR
    from dapo_lab.plan_report import ROUND_CAP_FACTOR as PLANNED
    from dapo_lab.plan_report import sequences

    assert PLANNED == ROUND_CAP_FACTOR  # the planner's copy (it never imports torch) is the sampler's

    def rows(*overrides: str) -> int:
        return sequences(make_plan(compose(list(overrides)), Cluster(1, 1)))

    assert rows() == 256  # the default: oversample on, up to 4 x 16 prompts x G 8 = 512, capped at 256
    assert rows("sampling.max_round_prompts=24") == 24 * 8
    assert rows("sampling.oversample=false") == 16 * 8
    assert rows("sampling=none") == 16 * 8
    assert rows("sampling.max_round_prompts=8") == 16 * 8  # a cap below gen_prompts: gen_prompts wins
    assert rows("rollout=vllm", "rollout.max_num_seqs=100") == 100
    assert rows("batch.gen_prompts=4", "batch.prompts_per_step=4") == 4 * 4 * 8  # null cap: 4 x gen_prompts
