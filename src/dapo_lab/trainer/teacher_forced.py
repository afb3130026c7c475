"""Teacher-forced log-probs (and entropy) of response tokens under a causal LM, for prompt+response pairs:
one forward over ``prompt + response`` gives every response token's log-prob at once (no sampling)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.utils.checkpoint
from torch import Tensor

from dapo_lab.algo import functional as F
from dapo_lab.models.compile import compiled_layers


def pack(prompt_ids: Sequence[Sequence[int]], response_ids: Tensor, pad_id: int,
         response_lengths: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """Each row is its prompt, then the first ``response_lengths[i]`` tokens of its response (all ``R`` if not
    given), then padding up to the longest such row: ``W = max(P_i + len_i)``, not ``max P + R``, so a pass over
    rows of similar total length computes little padding (the token budget's ``rows × longest row``).

    Returns ``(input_ids [N, W], starts [N])``: response token ``t`` of row ``i`` is at ``starts[i] + t``. The
    padding is only ever after a row's last token, so under causal attention no real token sees it (no mask).

    >>> ids, starts = pack([[7], [8, 9]], torch.tensor([[1, 2], [3, 0]]), pad_id=0, response_lengths=[2, 1])
    >>> ids.tolist(), starts.tolist()
    ([[7, 1, 2], [8, 9, 3]], [1, 2])
    >>> pack([[7], [8, 9]], torch.tensor([[1, 2], [3, 0]]), pad_id=0)[0].tolist()
    [[7, 1, 2, 0], [8, 9, 3, 0]]
    """
    n, r = response_ids.shape
    lengths = [r] * n if response_lengths is None else [int(k) for k in response_lengths]
    width = max(len(p) + k for p, k in zip(prompt_ids, lengths))
    responses = response_ids.cpu().tolist()
    rows = [list(p) + responses[i][: lengths[i]] for i, p in enumerate(prompt_ids)]
    input_ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows], dtype=torch.long)  # [N, W]
    return input_ids, torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)


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
def _response_head(head: torch.nn.Module, starts: Tensor, targets: Tensor, temperature: float, chunk: int | None,
                   with_entropy: bool, found: dict[str, Tensor | None]) -> Iterator[None]:
    """Make ``head`` (the LM head) return the targets' log-probs ``[N, R]`` instead of logits over every position.

    It first picks, per row, the hidden states that predict a response token (position ``starts[i] − 1 + t``
    predicts token ``t``): prompt positions never reach the head, which with a 150k vocabulary would be most of a
    pass's memory. With ``chunk``, the head and log-softmax run ``chunk`` positions at a time, each chunk's logits
    recomputed in the backward instead of kept: the peak is one chunk's ``[N, chunk, V]`` instead of ``[N, R, V]``
    (46 GiB at 20k tokens and a 152k vocabulary). It runs inside the model's own forward, so a sharded model's head
    is gathered as usual; its parameters keep their names."""
    project = head.forward
    n, r = targets.shape

    def forward(hidden: Tensor) -> Tensor:  # [N, W, H]
        width = hidden.shape[1]
        index = (starts[:, None] - 1 + torch.arange(r, device=hidden.device)).clamp(max=width - 1)  # [N, R]
        index = index + torch.arange(n, device=hidden.device)[:, None] * width  # into the [N·W] positions
        # index_select, not gather: its backward keeps only the index, gather's would keep all of [N, W, H].
        hidden = hidden.reshape(n * width, -1).index_select(0, index.reshape(-1)).view(n, r, -1)  # [N, R, H]
        if chunk is None or r <= chunk:
            logp, found["entropy"] = _token_logprobs(project(hidden), targets, temperature, with_entropy)
            return logp  # [N, R]
        pieces, entropies = [], []
        for start in range(0, r, chunk):
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
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Tensor,
    *,
    pad_id: int,
    response_lengths: Sequence[int] | None = None,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs ``[N, R]`` of ``response_ids`` under ``softmax(logits / temperature)``, and optionally the
    policy's entropy ``[N, R]`` at each response position (exact, from the logits).

    ``response_lengths``: each row's real response tokens (its mask's count); the forward then computes no
    position past a row's own ``prompt + response`` beyond the pass's longest such row (:func:`pack`). Values at
    positions past a row's length are meaningless: mask them. ``chunk_tokens``: compute the LM head and log-softmax
    over that many response positions at a time (recomputed in the backward), so the logits never exist for the
    whole response at once; the same values and gradients. Differentiable when called with grad enabled.
    """
    device = next(model.parameters()).device
    input_ids, starts = pack(prompt_ids, response_ids, pad_id, response_lengths)
    targets = response_ids.to(device)  # [N, R]
    found: dict[str, Tensor | None] = {}
    with compiled_layers(model), _response_head(model.get_output_embeddings(), starts.to(device), targets,
                                                temperature, chunk_tokens, with_entropy, found):
        # No attention mask: every row's padding comes after its last token, so causal attention already keeps it
        # out, and positions are 0.. for every row, as the rollout's (which count a row's real tokens).
        logp = model(input_ids=input_ids.to(device), use_cache=False, logits_to_keep=0).logits  # [N, R]
    return logp, found["entropy"]
