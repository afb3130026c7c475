"""experiments/update_ceiling.py: the update's ceiling passes, the interleaving of pairs, and autocast as Lightning's
bf16-mixed runs a training step (weight casts never reused across an optimizer step)."""

import doctest
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from dapo_lab.models.tiny import build_tiny
from dapo_lab.trainer.optimization import PlainOptimization

PATH = Path(__file__).resolve().parents[1] / "experiments" / "update_ceiling.py"


@pytest.fixture(scope="module")
def ceiling():
    """The script as a module (experiments/ is no package)."""
    spec = importlib.util.spec_from_file_location("update_ceiling", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_its_doctests_pass(ceiling):
    failed, attempted = doctest.testmod(ceiling)
    assert attempted >= 2 and failed == 0


def test_training_autocast_sees_a_weight_changed_in_place_where_the_default_cache_does_not(ceiling):
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(8, 8), torch.randn(3, 8)

    def before_and_after(context):
        with context:
            first = layer(x)
            with torch.no_grad():
                layer.weight.add_(1.0)  # what an optimizer step does between two updates of one DAPO step
            return first, layer(x)

    first, second = before_and_after(ceiling.training_autocast(True))
    assert second.dtype == torch.bfloat16 and not torch.equal(first, second)
    expected = (x.bfloat16() @ layer.weight.detach().bfloat16().T + layer.bias.detach().bfloat16())
    assert torch.allclose(second.float(), expected.float(), atol=0.05)
    # torch.autocast's default caches the bf16 weight: the second forward ran with the old weight.
    first, second = before_and_after(torch.autocast("cpu", dtype=torch.bfloat16))
    assert torch.equal(first, second)
    with ceiling.training_autocast(False):
        assert layer(x).dtype == torch.float32


def test_paired_alternates_the_order_after_one_untimed_call_each(ceiling):
    calls = []

    def timed(name, seconds):
        return lambda: calls.append(name) or seconds

    a, b = ceiling.paired(timed("a", 2.0), timed("b", 1.0), pairs=4)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert a == [2.0] * 4 and b == [1.0] * 4


def test_fraction_of_ceiling_is_the_median_of_each_pairs_ratio(ceiling):
    # Per pair: 1/2, 3/4, 1/1, 1/5 -> sorted 0.2, 0.5, 0.75, 1.0 -> median 0.625 (not median(c)/median(u) = 1/2.5).
    median, ratios = ceiling.fraction_of_ceiling([2.0, 4.0, 1.0, 5.0], [1.0, 3.0, 1.0, 1.0])
    assert ratios == [0.5, 0.75, 1.0, 0.2] and median == 0.625


def test_ceiling_update_runs_one_optimizer_step_per_pass_at_the_given_shapes(ceiling):
    model, _ = build_tiny(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    vocab = model.config.vocab_size
    seen = []
    model.register_forward_hook(lambda _m, args, kwargs, out: seen.append(
        (tuple(kwargs["input_ids"].shape), tuple(out.logits.shape))), with_kwargs=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    steps = []
    optimizer.register_step_post_hook(lambda *_: steps.append(1))
    before = [p.detach().clone() for p in model.parameters()]
    seconds = ceiling.ceiling_update(model, [(3, 7, 4), (2, 5, 2)], PlainOptimization(optimizer, model.parameters(),
                                                                                       1.0), autocast=True)
    assert seconds > 0 and len(steps) == 2
    # Every row real (no padding); the head only over the response positions (+1: the last one is dropped).
    assert seen == [((3, 7), (3, 5, vocab)), ((2, 5), (2, 3, vocab))]
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()) if p.requires_grad)
