"""A KV cache that is allocated once per decode call, for the HF engine's decode loop.

transformers' ``DynamicCache`` appends each step's keys and values with ``torch.cat``: every decode step copies the
whole cache of every layer (15% of a default generation round's CPU time, ``torch.profiler``, 2026-12-01). This
cache writes each step's keys and values into buffers sized for the prompt plus every new token, and hands the
attention a view of the filled part: no copy per step, and attention still runs over the real length only (unlike
transformers' ``StaticCache``, which attends over the whole buffer).
"""

from __future__ import annotations

import inspect

from torch import Tensor

try:  # transformers >= 5: one cache object per layer, made on demand by a Cache
    from transformers.cache_utils import Cache, DynamicLayer

    if "layer_class_to_replicate" not in inspect.signature(Cache.__init__).parameters:
        raise ImportError("a Cache that cannot make its layers")
except ImportError:  # older releases: the model's own cache is used instead
    Cache = DynamicLayer = None


def preallocated_cache(capacity: int) -> object | None:
    """A cache whose layers hold up to ``capacity`` positions, or None where transformers lacks per-layer caches
    (the caller then lets the model build its own).

    >>> import torch
    >>> cache = preallocated_cache(8)
    >>> k = torch.ones(2, 1, 3, 4)  # [B, heads, positions, head_dim]: a 3-token prefill
    >>> keys, _ = cache.update(k, k, 0)
    >>> keys.shape, cache.get_seq_length()
    (torch.Size([2, 1, 3, 4]), 3)
    >>> keys, _ = cache.update(2 * k[:, :, :1], k[:, :, :1], 0)  # one decode step
    >>> keys[:, 0, :, 0].tolist()
    [[1.0, 1.0, 1.0, 2.0], [1.0, 1.0, 1.0, 2.0]]
    """
    if Cache is None:
        return None
    return Cache(layer_class_to_replicate=lambda: PreallocatedLayer(capacity))


if DynamicLayer is not None:

    class PreallocatedLayer(DynamicLayer):
        """One layer's keys and values in ``[B, heads, capacity, head_dim]`` buffers; ``keys`` / ``values`` are views
        of the filled positions, as ``DynamicLayer``'s are the whole tensors."""

        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity = capacity
            self.length = 0

        def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
            batch, heads, _, dim = key_states.shape
            self.device = key_states.device
            self._keys = key_states.new_empty(batch, heads, self.capacity, dim)
            self._values = value_states.new_empty(batch, heads, self.capacity, value_states.shape[-1])
            self.is_initialized = True

        def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise ValueError(f"KV cache holds {self.capacity} positions, {end} were written")
            self._keys[:, :, self.length : end] = key_states
            self._values[:, :, self.length : end] = value_states
            self.length = end
            self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def batch_select_indices(self, indices: Tensor) -> None:
            """Keep rows ``indices`` (finished rows leave the batch): one copy of the buffers, not one per step."""
            if self.is_initialized:
                self._keys, self._values = self._keys[indices], self._values[indices]
                self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]
