"""model.compile: each decoder layer's training forward compiled, the same numbers, one graph for every shape, and
everything outside the training passes left eager."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from dapo_lab.build import build, check_compile
from dapo_lab.models.compile import backend_of, compile_layers, compiled_layers, decoder_layers
from dapo_lab.models.tiny import build_tiny
from dapo_lab.rollout import SamplingParams
from dapo_lab.trainer.teacher_forced import response_logprobs

CONF = Path(__file__).resolve().parents[2] / "conf"


class CountingBackend:
    """A torch.compile backend that runs the traced graph as it is and counts the graphs it was given."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs += 1
        return gm.forward


def small_model() -> torch.nn.Module:
    model = build_tiny(hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2, intermediate_size=48)[0]
    model.config._attn_implementation = "eager"
    return model.train()


def passes(model: torch.nn.Module, shapes: list[tuple[int, int, int]]) -> list[tuple[torch.Tensor, list]]:
    """For each (rows, prompt length, response length): the log-probs and the gradients of a weighted sum."""
    out = []
    for seed, (rows, prompt, response) in enumerate(shapes):
        gen = torch.Generator().manual_seed(seed)
        prompts = torch.randint(3, 200, (rows, prompt), generator=gen).tolist()
        ids = torch.randint(3, 200, (rows, response), generator=gen)  # [N, R]
        lengths = [response - i % 3 for i in range(rows)]
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logp, _ = response_logprobs(model, prompts, ids, pad_id=0, response_lengths=lengths, temperature=0.8)
        mask = torch.arange(response)[None] < torch.tensor(lengths)[:, None]
        (logp * mask * torch.linspace(-1, 1, response)).sum().backward()
        out.append((logp.detach()[mask], [p.grad.clone() for p in model.parameters()]))
    return out


@pytest.mark.parametrize("checkpointing", [False, True])
def test_compiled_layers_give_the_same_logprobs_and_gradients_with_one_graph_for_every_shape(checkpointing):
    shapes = [(4, 7, 9), (6, 5, 12), (3, 9, 4)]  # rows and lengths change every pass, as in training
    model = small_model()
    if checkpointing:  # model.gradient_checkpointing: the backward re-runs each compiled layer
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    eager = passes(model, shapes)
    counting = CountingBackend()
    compile_layers(model, counting)
    compiled = passes(model, shapes)
    for (lp_e, grads_e), (lp_c, grads_c) in zip(eager, compiled):
        torch.testing.assert_close(lp_c, lp_e, rtol=0, atol=1e-5)
        for a, b in zip(grads_c, grads_e):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # One forward graph for all three shapes and all three layers (dynamic shapes; parameters are inputs).
    assert counting.graphs == 1
    assert all("forward" not in vars(layer) for layer in decoder_layers(model))  # each layer is itself again


def test_only_the_training_passes_run_compiled():
    model = small_model()
    counting = CountingBackend()
    compile_layers(model, counting)
    with torch.no_grad():
        model(input_ids=torch.tensor([[5, 6, 7]]))  # the rollout's prefill, evaluation: eager
    assert counting.graphs == 0
    with compiled_layers(model):
        assert all(vars(layer)["forward"].__self__ is layer for layer in decoder_layers(model))
        with compiled_layers(model):  # nested (a caller's block around response_logprobs' own): still compiled after
            pass
        assert all("forward" in vars(layer) for layer in decoder_layers(model))
    assert all("forward" not in vars(layer) for layer in decoder_layers(model))


def test_a_copy_of_a_compiled_model_runs_with_its_own_weights():
    """The engine's bf16 copy and a reference model are deep copies: their layers must not run the original's."""
    model = small_model()
    compile_layers(model, CountingBackend())
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for param in twin.parameters():
            param.mul_(0.5)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad(), compiled_layers(twin):
        compiled = twin(input_ids=ids).logits
    torch.testing.assert_close(compiled, twin(input_ids=ids).logits)  # the twin's eager output, not the original's


def test_settings_and_clear_errors():
    assert backend_of(True) == "inductor" and backend_of(False) is None and backend_of("aot_eager") == "aot_eager"
    for bad in ("", "false", 3):
        with pytest.raises(ValueError, match="model.compile must be"):
            backend_of(bad)
    with pytest.raises(ValueError, match="no model.layers"):
        decoder_layers(torch.nn.Linear(2, 2))
    configs = {}
    for trainer in ("cpu_fsdp", "cpu_deepspeed_zero2", "cpu_deepspeed_zero3"):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            configs[trainer] = compose(config_name="train", overrides=[f"trainer={trainer}", "model.compile=true"])
    for trainer in ("cpu_deepspeed_zero2", "cpu_deepspeed_zero3"):
        with pytest.raises(ValueError, match="works with one process, DDP and FSDP2"):
            build(configs[trainer], Path("unused"))
    check_compile(configs["cpu_fsdp"])  # runs compiled in tests/trainer/test_trainer_distributed.py


def test_the_engine_generates_with_a_compiled_model():
    """The HF engine's prefill and decode steps never enter the compiled layers."""
    from dapo_lab.rollout.hf import HFEngine

    model = small_model()
    counting = CountingBackend()
    compile_layers(model, counting)
    engine = HFEngine()
    engine.attach(model, eos_id=1, pad_id=0)
    engine.update_weights(model)
    out = engine.generate([[5, 6, 7], [8, 9]], SamplingParams(max_new_tokens=4, n=2, seed=0))
    assert out.response_ids.shape[0] == 4 and counting.graphs == 0
