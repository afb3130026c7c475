"""``model.compile``: the decoder layers' training forward (and so their backward) compiled with ``torch.compile``,
one layer at a time ("regional compilation"), while every other use of the model stays eager.

Why per layer: a model's layers share one code object, so one compilation serves all of them (PyTorch treats
their parameters as inputs), and the compile time does not grow with depth. Why only while training: the rollout's
prefill and decode call the same layers with a KV cache and no autograd; compiling those too would trace more
graphs for no gain there (the engine's decode steps do not go through the layers' forward at all). Shapes change
every pass (rows and lengths), hence ``dynamic=True``: one graph for all of them.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch

_COMPILED = "_dapo_compiled_forward"  # the attribute holding a layer's compiled forward


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a Hugging Face causal LM (``model.model.layers``), or a ValueError naming the model.

    >>> from dapo_lab.models.tiny import build_tiny
    >>> len(decoder_layers(build_tiny(hidden_size=32, num_layers=2, intermediate_size=48)[0]))
    2
    """
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        raise ValueError(f"model.compile=true compiles each decoder layer, and {type(model).__name__} has no "
                         "model.layers list of them: set model.compile=false")
    return list(layers)


def backend_of(setting: bool | str) -> str | None:
    """``model.compile`` → the ``torch.compile`` backend, or None for no compilation (false).

    >>> backend_of(True), backend_of(False), backend_of("aot_eager")
    ('inductor', None, 'aot_eager')
    """
    if setting is True:
        return "inductor"
    if setting is False or setting is None:
        return None
    if isinstance(setting, str) and setting.strip() and setting.lower() not in ("true", "false"):
        return setting
    raise ValueError(f"model.compile must be true, false or a torch.compile backend name (e.g. aot_eager), "
                     f"got {setting!r}")


def compile_layers(model: torch.nn.Module, backend: str = "inductor") -> None:
    """Give each decoder layer a compiled forward for :func:`compiled_layers` to switch on. Nothing compiles yet:
    the first training pass does (tens of seconds on a small CPU; PyTorch caches the result on disk)."""
    layers = decoder_layers(model)
    # The class's function, not each layer's bound method: a copy of the model (the engine's bf16 copy, a reference
    # model) shares the attribute, and binding at switch-on time makes it run with its own weights.
    compiled = torch.compile(type(layers[0]).forward, dynamic=True, backend=backend)
    for layer in layers:
        setattr(layer, _COMPILED, compiled)


@contextlib.contextmanager
def compiled_layers(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, layers given a compiled forward by :func:`compile_layers` run it; after it, their own
    forward again. A model without them is left as it is; blocks may nest."""
    # Layers already switched on (a nested block) are left to the block that switched them on.
    layers = [m for m in model.modules() if _COMPILED in vars(m) and "forward" not in vars(m)]
    for layer in layers:
        layer.forward = types.MethodType(vars(layer)[_COMPILED], layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward  # the class's own forward again
