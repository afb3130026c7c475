"""Teacher-forced log-probs (and entropy) of response tokens under a causal LM, for prompt+response pairs:
one forward over ``prompt + response`` gives every response token's log-prob at once (no sampling)."""

from __future__ import annotations

import torch
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


def response_logprobs(
    model: torch.nn.Module,
    prompt_ids: list[list[int]],
    response_ids: Tensor,
    *,
    pad_id: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs ``[N, R]`` of ``response_ids`` under ``softmax(logits / temperature)``, and optionally the
    policy's entropy ``[N, R]`` at each response position (exact, from the logits).

    Differentiable when called with grad enabled. Values at padding positions are meaningless: mask them.
    """
    device = next(model.parameters()).device
    input_ids, attention, positions, width = pack(prompt_ids, response_ids, pad_id)
    out = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                position_ids=positions.to(device), use_cache=False)
    # The token at position t is predicted by the logits at t − 1.
    logits = out.logits[:, width - 1 : -1].float()  # [N, R, V]
    if temperature != 1.0:
        logits = logits / temperature
    targets = response_ids.to(device).unsqueeze(-1)  # [N, R, 1]
    logp = logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # [N, R]
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = F.entropy_from_logits_chunked(logits.detach(), chunk_size=4096)  # [N, R]
    return logp, entropy
