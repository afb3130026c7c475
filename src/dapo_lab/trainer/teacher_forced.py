"""Teacher-forced log-probs (and entropy) of response tokens under a causal LM, for prompt+response pairs:
one forward over ``prompt + response`` gives every response token's log-prob at once (no sampling)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.utils.checkpoint
from torch import Tensor

from dapo_lab.algo import functional as F


def pack(prompt_ids: list[list[int]], response_ids: Tensor, pad_id: int) -> tuple[Tensor, Tensor, Tensor, int]:
    """Left-pad prompts to ``P`` and append the right-padded responses ``[N, R]``.

    Returns ``(input_ids [N, P+R], attention_mask [N, P+R], position_ids [N, P+R], P)``. Positions count
    real tokens only, so a padded prompt sees the same positions as an unpadded one (as in the rollout).

    >>> ids, attn, pos, p = pack([[7], [8, 9]], torch.tensor([[1, 2], [3, 0]]), pad_id=0)
    >>> ids.tolist(), pos.tolist(), p
    ([[0, 7, 1, 2], [8, 9, 3, 0]], [[0, 0, 1, 2], [0, 1, 2, 3]], 2)
    """
    width = max(len(p) for p in prompt_ids)
    n, r = response_ids.shape
    prompts = torch.full((n, width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((n, width), dtype=torch.long)
    for row, p in enumerate(prompt_ids):
        prompts[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        prompt_mask[row, width - len(p) :] = 1
    input_ids = torch.cat([prompts, response_ids.cpu()], dim=1)  # [N, P+R]
    attention = torch.cat([prompt_mask, torch.ones((n, r), dtype=torch.long)], dim=1)  # [N, P+R]
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # [N, P+R]
    return input_ids, attention, positions, width


def _token_logprobs(logits: Tensor, targets: Tensor, temperature: float, with_entropy: bool
                    ) -> tuple[Tensor, Tensor | None]:
    """``logits [n, t, V]`` (any dtype) -> log-probs of ``targets [n, t]`` under ``softmax(logits / T)`` ``[n, t]``,
    and the entropy ``[n, t]`` (no gradient) if asked."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # [n, t]
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = F.entropy_from_logits_chunked(logits.detach(), chunk_size=4096)  # [n, t]
    return logp, entropy


@contextlib.contextmanager
def _chunked_head(head: torch.nn.Module, targets: Tensor, temperature: float, chunk: int, with_entropy: bool,
                  found: dict[str, Tensor | None]) -> Iterator[None]:
    """Make ``head`` (the LM head) return the targets' log-probs ``[N, R]`` instead of logits, computed ``chunk``
    positions at a time, each chunk's logits recomputed in the backward instead of kept: the peak is one chunk's
    ``[N, chunk, V]`` instead of ``[N, R, V]`` (46 GiB at 20k tokens and a 152k vocabulary). It runs inside the
    model's own forward, so a sharded model's head is gathered as usual; its parameters keep their names."""
    project = head.forward

    def forward(hidden: Tensor) -> Tensor:  # [N, R + 1, H]: the last position predicts past the response
        hidden = hidden[:, : targets.shape[1]]  # [N, R, H]
        pieces, entropies = [], []
        for start in range(0, targets.shape[1], chunk):
            h, t = hidden[:, start : start + chunk], targets[:, start : start + chunk]
            logp = torch.utils.checkpoint.checkpoint(
                lambda h_, t_: _token_logprobs(project(h_), t_, temperature, False)[0], h, t, use_reentrant=False)
            pieces.append(logp)
            if with_entropy:
                with torch.no_grad():
                    entropies.append(_token_logprobs(project(h.detach()), t, temperature, True)[1])
        found["entropy"] = torch.cat(entropies, dim=1) if with_entropy else None
        return torch.cat(pieces, dim=1)  # [N, R]

    head.forward = forward
    try:
        yield
    finally:
        del head.forward  # the class's own forward again


def response_logprobs(
    model: torch.nn.Module,
    prompt_ids: list[list[int]],
    response_ids: Tensor,
    *,
    pad_id: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs ``[N, R]`` of ``response_ids`` under ``softmax(logits / temperature)``, and optionally the
    policy's entropy ``[N, R]`` at each response position (exact, from the logits).

    ``chunk_tokens``: compute the LM head and log-softmax over that many response positions at a time (recomputed
    in the backward), so the logits never exist for the whole response at once; the same values and gradients.
    Differentiable when called with grad enabled. Values at padding positions are meaningless: mask them.
    """
    device = next(model.parameters()).device
    input_ids, attention, positions, _ = pack(prompt_ids, response_ids, pad_id)
    r = response_ids.shape[1]
    targets = response_ids.to(device)  # [N, R]
    inputs = dict(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                  position_ids=positions.to(device), use_cache=False, logits_to_keep=r + 1)
    head = model.get_output_embeddings() if chunk_tokens else None
    if head is not None and r > chunk_tokens:
        found: dict[str, Tensor | None] = {}
        with _chunked_head(head, targets, temperature, chunk_tokens, with_entropy, found):
            logp = model(**inputs).logits  # [N, R]: the head returned log-probs
        return logp, found["entropy"]
    # Logits only where a response token is predicted (the last prompt position onwards): the prompt's would be
    # thrown away, and with a 150k vocabulary they are most of a pass's memory. The token at position t is predicted
    # by the logits at t − 1.
    logits = model(**inputs).logits[:, :-1]  # [N, R, V]
    return _token_logprobs(logits, targets, temperature, with_entropy)
