"""Pure tensor math of DAPO and its ablations (the `torch.nn.functional` of dapo-lab).

Every function here is stateless, batched, device- and dtype-agnostic, and free of Python loops over
tokens. Masks are bool ``[B, T]``: True marks a response token that counts in the loss.

Notation (DAPO paper, arXiv 2503.14476): ``G`` responses per prompt form a group; ``r = π_θ / π_old`` is
the per-token importance ratio; ``A`` the group-normalised advantage; ``L_max`` / ``L_cache`` the
overlong limits.

Simplifications: reductions run in at least fp32 (bf16 inputs are upcast, results cast back where the
output is per element), because bf16 sums over 10^5 tokens lose whole units.
"""

from __future__ import annotations

import torch
from torch import Tensor

KL_KINDS = ("k1", "k2", "k3")
# exp() of a log-ratio beyond this is inf in fp32; verl clamps the same way.
_LOG_RATIO_BOUND = 20.0


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to reduce in: fp64 stays fp64, everything else goes to fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shape mismatch: {shapes}")


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``values`` where ``mask`` is True (fp32 or wider accumulation).

    >>> masked_sum(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[True, False], [True, True]]))
    tensor(8.)
    """
    _check_same_shape(values=values, mask=mask)
    zeroed = torch.where(mask, values.to(_acc_dtype(values.dtype)), 0.0)
    return zeroed.sum() if dim is None else zeroed.sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` where ``mask`` is True; 0 where nothing is selected (never NaN).

    >>> masked_mean(torch.tensor([[1.0, 2.0], [3.0, 5.0]]), torch.tensor([[True, False], [True, True]]), dim=-1)
    tensor([1., 4.])
    >>> masked_mean(torch.ones(2, 2), torch.zeros(2, 2, dtype=torch.bool))
    tensor(0.)
    """
    total = masked_sum(values, mask, dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1)


def group_advantages(rewards: Tensor, group_size: int, *, scale_std: bool = True, eps: float = 1e-6) -> Tensor:
    """GRPO group-normalised advantages (DAPO Eq. 9).

    ``Â_i = (R_i − mean({R_j}_{j=1..G})) / (std({R_j}) + eps)`` with the unbiased (G−1) standard
    deviation, as verl and TRL compute it. ``scale_std=False`` gives Dr. GRPO's ``R_i − mean``.
    Responses are grouped contiguously: rows ``[g·G, (g+1)·G)`` belong to prompt ``g``. A group whose
    rewards are all equal gets exactly 0.

    Args:
        rewards: ``[N]`` with ``N = groups × group_size``.
    Returns:
        ``[N]`` advantages, dtype of ``rewards``.

    >>> group_advantages(torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, 1.0]), group_size=3)
    tensor([ 1.1547, -0.5773, -0.5773,  0.0000,  0.0000,  0.0000])
    >>> group_advantages(torch.tensor([1.0, -1.0]), group_size=2, scale_std=False)
    tensor([ 1., -1.])
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (a group of one has no baseline), got {group_size}")
    if rewards.numel() % group_size != 0:
        raise ValueError(f"rewards has {rewards.numel()} entries, not a multiple of group_size={group_size}")
    grouped = rewards.to(_acc_dtype(rewards.dtype)).view(-1, group_size)  # [groups, G]
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # [groups, G]
    all_equal = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)  # [groups, 1]
    if scale_std:
        centred = centred / (grouped.std(dim=1, keepdim=True, unbiased=True) + eps)
    # The mean of equal floats can differ from them in the last bit; the paper's "no signal" is exactly 0.
    advantages = torch.where(all_equal, torch.zeros_like(centred), centred)
    return advantages.view(-1).to(rewards.dtype)


def clipped_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    *,
    eps_low: float,
    eps_high: float,
    dual_clip: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token PPO clipped surrogate with decoupled clip range (DAPO Eq. 10, Clip-Higher).

    ``loss_t = max(−r_t·A, −clip(r_t, 1−ε_low, 1+ε_high)·A)``, ``r_t = exp(logp_t − old_logp_t)``.
    Symmetric PPO/GRPO is ``eps_low == eps_high``; DAPO uses 0.2 / 0.28. With ``dual_clip=c > 1``, for
    ``A < 0`` the loss is further capped at ``−c·A`` (verl's dual clip), so a token whose ratio exploded
    cannot dominate the batch.

    Args:
        logp, old_logp: ``[B, T]`` log-probabilities of the sampled tokens under π_θ and π_old.
        advantages: ``[B]`` (one per response, broadcast over tokens) or ``[B, T]``.
    Returns:
        ``(loss [B, T], clipped_low [B, T], clipped_high [B, T])``; ``clipped_high`` marks tokens where the
        upper clip binds (A > 0, r > 1+ε_high), ``clipped_low`` where the lower one binds (A < 0, r < 1−ε_low).

    The paper's example: with ε=0.2 a token of old probability 0.01 stops getting gradient at 0.012,
    while one at 0.9 may reach 1.08 (i.e. anything): the upper clip restrains exploration of unlikely
    tokens. ε_high=0.28 lets the unlikely token rise to 0.0128.

    >>> lp, old = torch.log(torch.tensor([[0.013]])), torch.log(torch.tensor([[0.01]]))
    >>> loss, low, high = clipped_policy_loss(lp, old, torch.tensor([1.0]), eps_low=0.2, eps_high=0.2)
    >>> round(loss.item(), 4), high.item()
    (-1.2, True)
    >>> loss, low, high = clipped_policy_loss(lp, old, torch.tensor([1.0]), eps_low=0.2, eps_high=0.28)
    >>> round(loss.item(), 4), high.item()
    (-1.28, True)
    """
    _check_same_shape(logp=logp, old_logp=old_logp)
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
    if not 0.0 <= eps_low < 1.0:
        raise ValueError(f"eps_low must be in [0, 1), got {eps_low}")
    if eps_high < 0.0:
        raise ValueError(f"eps_high must be >= 0, got {eps_high}")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None), got {dual_clip}")
    if advantages.dim() == 1:
        if advantages.shape[0] != logp.shape[0]:
            raise ValueError(f"advantages [B]={tuple(advantages.shape)} does not match logp {tuple(logp.shape)}")
        advantages = advantages.unsqueeze(-1)  # [B, 1]
    elif advantages.shape != logp.shape:
        raise ValueError(f"advantages must be [B] or [B, T]; got {tuple(advantages.shape)} for {tuple(logp.shape)}")

    log_ratio = (logp - old_logp).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    ratio = torch.exp(log_ratio)  # [B, T]
    unclipped = -ratio * advantages  # [B, T]
    clipped = -ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * advantages  # [B, T]
    loss = torch.maximum(unclipped, clipped)  # [B, T]
    if dual_clip is not None:
        loss = torch.where(advantages < 0, torch.minimum(loss, -dual_clip * advantages), loss)
    clipped_high = (advantages > 0) & (ratio > 1.0 + eps_high)
    clipped_low = (advantages < 0) & (ratio < 1.0 - eps_low)
    return loss, clipped_low, clipped_high


def _check_loss_and_mask(loss: Tensor, mask: Tensor) -> None:
    _check_same_shape(loss=loss, mask=mask)
    if loss.dim() != 2:
        raise ValueError(f"loss must be [B, T], got shape {tuple(loss.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")


def count_tokens(mask: Tensor) -> Tensor:
    """The number of loss tokens: the denominator of the token-level loss.

    >>> count_tokens(torch.tensor([[True, True], [True, False], [False, False]]))
    tensor(3)
    """
    return mask.sum()


def count_sequences(mask: Tensor) -> Tensor:
    """The number of responses with at least one loss token: the denominator of the sample-level losses.
    A response removed by the overlong filter (no token in the loss) does not dilute the loss.

    >>> count_sequences(torch.tensor([[True, True], [True, False], [False, False]]))
    tensor(2)
    """
    return (mask.sum(dim=-1) > 0).sum()


# The denominators an aggregation may need, by name: a micro-batch's loss uses the counts of its whole
# mini-batch (all micro-batches, all data-parallel ranks), so summing the pieces gives the mini-batch's loss.
LOSS_COUNTS = {"tokens": count_tokens, "sequences": count_sequences}


def _denominator(count: float | Tensor, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(count, dtype=dtype).clamp(min=1)


def token_mean(loss: Tensor, mask: Tensor, *, tokens: float | Tensor | None = None) -> Tensor:
    """DAPO's token-level loss (Eq. 12): ``Σ_i Σ_t loss_{i,t} / Σ_i |o_i|``, every token of the batch weighs the
    same. ``tokens`` replaces the local count (:func:`count_tokens`) with the whole mini-batch's.

    The paper's example: a 2-token answer with loss 2 beside ten 1-token answers with loss 0.5 — per
    sample the long answer weighs 1/11 of the batch, per token 2/12 of it.

    >>> loss = torch.tensor([[2.0, 2.0]] + [[0.5, 0.0]] * 10)
    >>> mask = torch.tensor([[True, True]] + [[True, False]] * 10)
    >>> token_mean(loss, mask)  # (2·2 + 10·0.5) / 12
    tensor(0.7500)
    >>> token_mean(torch.ones(2, 2), torch.zeros(2, 2, dtype=torch.bool))  # nothing selected: 0, not NaN
    tensor(0.)
    """
    _check_loss_and_mask(loss, mask)
    tokens = count_tokens(mask) if tokens is None else tokens
    return masked_sum(loss, mask) / _denominator(tokens, _acc_dtype(loss.dtype))


def seq_mean_token_mean(loss: Tensor, mask: Tensor, *, sequences: float | Tensor | None = None) -> Tensor:
    """GRPO's sample-level loss (Eq. 8): ``(1/G) Σ_i (1/|o_i|) Σ_t loss_{i,t}``, each response's token mean
    averaged over responses, so a long response's tokens weigh less. ``sequences`` replaces the local count.

    >>> loss = torch.tensor([[2.0, 2.0]] + [[0.5, 0.0]] * 10)
    >>> mask = torch.tensor([[True, True]] + [[True, False]] * 10)
    >>> seq_mean_token_mean(loss, mask)  # (2 + 10·0.5) / 11
    tensor(0.6364)
    """
    _check_loss_and_mask(loss, mask)
    sequences = count_sequences(mask) if sequences is None else sequences
    token_sums = masked_sum(loss, mask, dim=-1)  # [B]
    per_response = token_sums / mask.sum(dim=-1).clamp(min=1)  # [B]
    return per_response.sum() / _denominator(sequences, _acc_dtype(loss.dtype))


def seq_mean_token_sum(loss: Tensor, mask: Tensor, *, sequences: float | Tensor | None = None) -> Tensor:
    """Each response's token sum, averaged over responses: ``(1/G) Σ_i Σ_t loss_{i,t}``.

    >>> seq_mean_token_sum(torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([[True, True], [True, False]]))
    tensor(3.)
    """
    _check_loss_and_mask(loss, mask)
    sequences = count_sequences(mask) if sequences is None else sequences
    return masked_sum(loss, mask, dim=-1).sum() / _denominator(sequences, _acc_dtype(loss.dtype))


def seq_mean_token_sum_norm(loss: Tensor, mask: Tensor, *, norm_len: float,
                            sequences: float | Tensor | None = None) -> Tensor:
    """Dr. GRPO's loss: ``Σ_i Σ_t loss_{i,t} / (G · L)`` with a constant ``L = norm_len`` (the response limit), so
    neither the response's length nor the batch's token count changes a token's weight.

    >>> seq_mean_token_sum_norm(torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([[True, True], [True, False]]),
    ...                         norm_len=4)
    tensor(0.7500)
    """
    _check_loss_and_mask(loss, mask)
    if not norm_len > 0:
        raise ValueError(f"norm_len must be > 0, got {norm_len}")
    sequences = count_sequences(mask) if sequences is None else sequences
    token_sums = masked_sum(loss, mask, dim=-1)  # [B]
    return token_sums.sum() / (_denominator(sequences, _acc_dtype(loss.dtype)) * float(norm_len))


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str) -> Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) from sampled-token log-probs (Schulman's k1/k2/k3).

    ``k1 = logp − ref``; ``k2 = ½(logp − ref)²``; ``k3 = exp(ref − logp) − (ref − logp) − 1`` (unbiased,
    always ≥ 0, low variance: GRPO's choice). Returns ``[B, T]``.

    >>> lp, ref = torch.tensor([[0.0]]), torch.log(torch.tensor([[0.5]]))
    >>> [round(kl_estimate(lp, ref, k).item(), 4) for k in ("k1", "k2", "k3")]
    [0.6931, 0.2402, 0.1931]
    """
    if kind not in KL_KINDS:
        raise ValueError(f"unknown KL estimator {kind!r}; expected one of {KL_KINDS}")
    _check_same_shape(logp=logp, ref_logp=ref_logp)
    log_ratio = logp - ref_logp
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.square()
    neg = (-log_ratio).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    return torch.exp(neg) - neg - 1.0


def soft_overlong_penalty(lengths: Tensor, *, max_len: int, cache_len: int, factor: float = 1.0) -> Tensor:
    """Length-aware penalty of DAPO Eq. 13 (soft overlong punishment).

    ``R(y) = 0`` if ``|y| ≤ L_max − L_cache``; ``((L_max − L_cache) − |y|) / L_cache`` if
    ``L_max − L_cache < |y| ≤ L_max``; ``−1`` beyond ``L_max``; all times ``factor``. It is added to the
    rule-based reward.

    >>> soft_overlong_penalty(torch.tensor([70, 80, 90, 100, 120]), max_len=100, cache_len=20)
    tensor([ 0.0000,  0.0000, -0.5000, -1.0000, -1.0000])
    """
    if cache_len <= 0 or cache_len > max_len:
        raise ValueError(f"cache_len must be in (0, max_len={max_len}], got {cache_len}")
    if factor < 0:
        raise ValueError(f"factor must be >= 0, got {factor}")
    expected_len = float(max_len - cache_len)
    lengths = lengths.to(torch.float32)
    inside = (expected_len - lengths) / cache_len
    penalty = torch.where(lengths <= expected_len, torch.zeros_like(lengths), inside)
    return penalty.clamp(min=-1.0) * factor


def informative_groups(values: Tensor, group_size: int, *, atol: float = 1e-6) -> Tensor:
    """Groups that carry a learning signal (DAPO Eq. 11's constraint ``0 < |{correct}| < G``).

    True where a group's values are not all equal, compared with a tolerance (not ``std != 0``, which
    float noise in shaped rewards makes True). Dynamic sampling keeps these.

    Args:
        values: ``[N]`` per-response values (correctness or reward), grouped contiguously.
    Returns:
        ``bool [N // group_size]``.

    >>> informative_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.3, 0.3 + 1e-9]), group_size=2)
    tensor([False,  True, False, False])
    """
    if values.dim() != 1 or group_size < 1 or values.numel() % group_size != 0:
        raise ValueError(f"values must be 1-D with a multiple of group_size={group_size} entries, "
                         f"got shape {tuple(values.shape)}")
    grouped = values.to(_acc_dtype(values.dtype)).view(-1, group_size)  # [groups, G]
    spread = grouped.max(dim=1).values - grouped.min(dim=1).values  # [groups]
    return spread > atol


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Exact entropy of ``softmax(logits)`` over the last dim, in fp32 (or fp64): ``[..., V] -> [...]``.

    ``H = logsumexp(z) − Σ softmax(z)·z``, computed on ``z − max(z)`` so huge logits do not cancel, and
    with ``0·(−inf) = 0`` so masked (``−inf``) logits are fine. This is the policy's true entropy, not the
    negative log-likelihood of sampled tokens.

    >>> entropy_from_logits(torch.zeros(4))  # uniform over 4: log 4
    tensor(1.3863)
    >>> entropy_from_logits(torch.tensor([1e4, 1e4, -float("inf")]))  # two equal huge logits: log 2
    tensor(0.6931)
    """
    z = logits.to(_acc_dtype(logits.dtype))
    z = z - z.max(dim=-1, keepdim=True).values  # [..., V], max is 0
    lse = torch.logsumexp(z, dim=-1)  # [...]
    p = torch.softmax(z, dim=-1)  # [..., V]
    p_times_z = torch.where(p > 0, p * z, torch.zeros_like(z))
    return lse - p_times_z.sum(dim=-1)


def entropy_from_logits_chunked(logits: Tensor, chunk_size: int = 1024) -> Tensor:
    """:func:`entropy_from_logits` over ``chunk_size`` rows at a time: ``[..., V] -> [...]``.

    For 150k-token vocabularies, the full version would allocate several ``[B, T, V]`` fp32 temporaries;
    this one never holds more than ``chunk_size × V`` of them.

    >>> x = torch.randn(3, 5, 7)
    >>> torch.allclose(entropy_from_logits_chunked(x, chunk_size=4), entropy_from_logits(x))
    True
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    flat = logits.reshape(-1, logits.shape[-1])  # [rows, V]
    out = torch.empty(flat.shape[0], dtype=_acc_dtype(logits.dtype), device=logits.device)
    for start in range(0, flat.shape[0], chunk_size):
        out[start : start + chunk_size] = entropy_from_logits(flat[start : start + chunk_size])
    return out.view(logits.shape[:-1])


def truncated_importance_weights(trainer_logp: Tensor, engine_logp: Tensor, *, cap: float) -> Tensor:
    """Truncated importance sampling (TIS) weights for the rollout/train mismatch: ``[B, T] -> [B, T]``.

    ``w = min(exp(log π_old(trainer) − log π_old(engine)), C)`` per token (verl's and TRL's correction,
    "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training", Yao et al. 2025): the engine
    sampled from its own numerics, the loss assumes the trainer's, and the ratio re-weights each token's
    policy loss towards the trainer's distribution; the cap ``C`` bounds the variance. Computed as
    ``exp(min(Δ, log C))`` (equal, and never overflows), detached (a constant weight, no gradient), in fp32.
    Padding positions hold arbitrary values: mask them.

    >>> trainer = torch.log(torch.tensor([[0.5, 0.9, 0.2]]))
    >>> engine = torch.log(torch.tensor([[0.5, 0.3, 0.4]]))
    >>> truncated_importance_weights(trainer, engine, cap=2.0)
    tensor([[1.0000, 2.0000, 0.5000]])
    """
    import math  # (local: this addition leaves the module's header untouched)

    _check_same_shape(trainer_logp=trainer_logp, engine_logp=engine_logp)
    if not cap > 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    log_ratio = trainer_logp.detach().to(_acc_dtype(trainer_logp.dtype)) - engine_logp.detach().to(
        _acc_dtype(engine_logp.dtype))  # [B, T]
    return torch.exp(log_ratio.clamp(max=math.log(cap)))
