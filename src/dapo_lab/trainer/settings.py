"""Plain settings of a DAPO run that are not component switches: batch geometry, optimiser, evaluation.

They validate themselves, so an inconsistent config fails with one clear ``ValueError`` before any model
is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from dapo_lab.trainer.schedule import lr_at


@dataclass(frozen=True)
class BatchSettings:
    """Batch geometry of one training step (verl's names in brackets).

    Args:
        group_size: responses per prompt, ``G`` [rollout.n].
        prompts_per_step: groups trained on per step [data.train_batch_size].
        gen_prompts: prompts per generation round; dynamic sampling may run several rounds [gen_batch_size].
        mini_batch_prompts: groups per optimizer update; ``prompts_per_step / mini_batch_prompts`` updates
            per epoch [ppo_mini_batch_size].
        ppo_epochs: passes over the step's batch [ppo_epochs].
        micro_batch_size: responses per forward/backward; gradients are accumulated exactly over them.
        max_tokens_per_micro_batch: token-budget micro-batching (verl's ``ppo_max_token_len_per_gpu``): cut each
            mini-batch's rows, sorted longest first, into passes of at most this many padded tokens (rows × longest
            prompt + response) and ``micro_batch_size`` rows: the fewest such passes, and of those cuts the one with
            the fewest padded tokens; null: fixed ``micro_batch_size`` rows per pass. Ranks agree on the number of
            passes (the largest) and pad with zero-weight dummies.
        logprob_chunk_tokens: compute the LM head and log-softmax over this many response positions at a time, each
            chunk recomputed in the backward, so a pass never holds the logits of a whole response (with a 152k
            vocabulary, 46 GiB at 20k tokens); the same values and gradients. Null: all at once (fine for short
            responses or small vocabularies).
    """

    group_size: int = 8
    prompts_per_step: int = 16
    gen_prompts: int = 16
    mini_batch_prompts: int = 4
    ppo_epochs: int = 1
    micro_batch_size: int = 64
    max_tokens_per_micro_batch: int | None = None
    logprob_chunk_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.logprob_chunk_tokens is not None and self.logprob_chunk_tokens < 1:
            raise ValueError(f"batch.logprob_chunk_tokens must be >= 1 or null, got {self.logprob_chunk_tokens}")
        for name in ("prompts_per_step", "gen_prompts", "mini_batch_prompts", "ppo_epochs", "micro_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"batch.{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError(f"batch.group_size must be >= 2 (advantages need a group), got {self.group_size}")
        if self.max_tokens_per_micro_batch is not None and self.max_tokens_per_micro_batch < 1:
            raise ValueError(f"batch.max_tokens_per_micro_batch must be >= 1 or null, got "
                             f"{self.max_tokens_per_micro_batch}")
        if self.prompts_per_step % self.mini_batch_prompts != 0:
            raise ValueError(f"batch.mini_batch_prompts={self.mini_batch_prompts} must divide "
                             f"batch.prompts_per_step={self.prompts_per_step}")

    @property
    def updates_per_step(self) -> int:
        return self.ppo_epochs * self.prompts_per_step // self.mini_batch_prompts


@dataclass(frozen=True)
class OptimSettings:
    """AdamW with a linear warmup (the paper: lr 1e-6, 20 warmup steps, then constant).

    Args:
        lr: peak learning rate.
        warmup_steps: DAPO steps of linear warmup from ``lr / warmup_steps``.
        weight_decay: AdamW's decoupled weight decay.
        betas: AdamW's ``(β1, β2)``.
        grad_clip: the global gradient-norm clip of every update.
        decay: ``"constant"`` (the paper's) keeps ``lr`` after the warmup; ``"cosine"`` (verl's
            ``lr_scheduler_type: cosine``) decays it to ``min_lr_ratio × lr`` at the run's last step.
        min_lr_ratio: the floor of the cosine decay, as a fraction of ``lr``.
        max_consecutive_skips: an update whose loss or gradient is NaN/Inf is skipped (optimizer untouched, counted
            in ``actor/skipped_updates``, logged with its batch's statistics); more than this many in a row stop the
            run with a checkpoint of the last good state.
    """

    lr: float = 1e-6
    warmup_steps: int = 0
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    decay: str = "constant"
    min_lr_ratio: float = 0.0
    max_consecutive_skips: int = 5

    def __post_init__(self) -> None:
        if self.max_consecutive_skips < 0:
            raise ValueError(f"optim.max_consecutive_skips must be >= 0, got {self.max_consecutive_skips}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip <= 0:
            raise ValueError(f"optim: lr and grad_clip must be > 0 and warmup_steps >= 0, got {self}")
        if self.decay not in ("constant", "cosine"):
            raise ValueError(f"optim.decay must be 'constant' or 'cosine', got {self.decay!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        object.__setattr__(self, "betas", tuple(self.betas))

    def lr_factor(self, step: int, total_steps: int | None) -> float:
        """The multiplier of ``lr`` for the update made at DAPO step ``step`` (0-based) of ``total_steps``.

        >>> o = OptimSettings(lr=1.0, warmup_steps=2, decay="cosine", min_lr_ratio=0.1)
        >>> [round(o.lr_factor(s, 6), 3) for s in range(6)]
        [0.5, 1.0, 1.0, 0.775, 0.325, 0.1]
        >>> [OptimSettings(warmup_steps=2).lr_factor(s, 6) for s in (0, 1, 5)]
        [0.5, 1.0, 1.0]
        """
        if self.decay == "constant" or not total_steps:
            return (step + 1) / self.warmup_steps if step < self.warmup_steps else 1.0
        return lr_at(step, total_steps, 1.0, self.warmup_steps, self.min_lr_ratio)


@dataclass(frozen=True)
class GenerationSettings:
    """Rollout sampling during training.

    Args:
        temperature: sampling temperature (the paper: 1.0); the loss uses the same tempered log-probs.
        top_p: nucleus sampling threshold (1.0: off).
        max_new_tokens: ``L_max``, the response limit.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 96

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"generation.temperature must be > 0 for RL rollouts, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"generation.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"generation.max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class EvalSettings:
    """Evaluation with the paper's sampling (T=1.0, top_p=0.7): avg@k, pass@k, and greedy accuracy.

    Args:
        every: DAPO steps between evaluations (the first runs at step 0, and one after the last step).
        k: samples per prompt for avg@k / pass@k (the paper: 32).
        temperature, top_p: the sampled evaluation's decoding.
        greedy: also measure greedy accuracy.
        max_prompts: cap on the eval split (null: all of it).
        batch_prompts: prompts per generation call.
        seed: the evaluation's sampling seed (the same problems get the same draws at every eval).
        interim_prompts: evaluations between the first (step 0) and the last cover only the split's first
            ``interim_prompts`` prompts, logged as ``eval_interim/*``; the first and last cover the whole split and
            log ``eval_interim/*`` from the same prompts too, so the interim curve has every point. A multiple of
            ``batch_prompts``: the subset's prompts then get the same draws as in a full evaluation. null: every
            evaluation covers the whole split.
    """

    every: int = 10
    k: int = 4
    temperature: float = 1.0
    top_p: float = 0.7
    greedy: bool = True
    max_prompts: int | None = None
    batch_prompts: int = 64
    seed: int = 1234
    interim_prompts: int | None = None

    def __post_init__(self) -> None:
        if self.every < 1 or self.k < 1 or self.batch_prompts < 1:
            raise ValueError(f"eval: every, k and batch_prompts must be >= 1, got {self}")
        if self.interim_prompts is not None and (self.interim_prompts < 1 or self.interim_prompts % self.batch_prompts):
            raise ValueError(f"evaluation.interim_prompts must be a positive multiple of evaluation.batch_prompts "
                             f"({self.batch_prompts}) or null, got {self.interim_prompts}")


OLD_LOGPROBS = ("auto", "engine", "recompute")


@dataclass(frozen=True)
class RolloutCorrection:
    """Where PPO's ``π_old`` comes from, and how the loss corrects for the rollout engine's numerics.

    Settings of the loss, not of an engine: every engine offers its sampling log-probs
    (:class:`dapo_lab.rollout.RolloutOutput`) and says whether they are the trainer's own
    (``logprobs_match_trainer``); this node decides what the loss does with them.

    Args:
        old_logprobs: ``"recompute"`` (verl's default): one trainer forward over the step's batch gives
            ``π_old``. ``"engine"``: the log-probs the engine sampled with stand in for ``π_old`` (the forward,
            ~10% of a CPU step, is saved; ``train/entropy`` is then measured in the update's first epoch).
            ``"auto"``: ``engine`` when the engine's log-probs are the trainer's own (the transformers engine
            decoding the training weights in their dtype, or as the bf16 copy that the default decodes with on one
            CPU process: ``HFEngine.logprobs_match_trainer``) and no ``tis_cap`` is set, else ``recompute``.
        tis_cap: truncated importance sampling cap ``C`` (2.0 in verl and TRL; null: off): each token's policy
            loss is multiplied by ``min(exp(log π_old(trainer) − log π_old(engine)), C)``. Needs the recompute.

    >>> RolloutCorrection().resolve(engine_logprobs_exact=True)
    'engine'
    >>> RolloutCorrection(tis_cap=2.0).resolve(engine_logprobs_exact=True)
    'recompute'
    >>> RolloutCorrection(old_logprobs="engine", tis_cap=2.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: rollout_correction.tis_cap corrects the gap ... old_logprobs='engine' removes: set one of them
    """

    old_logprobs: str = "auto"
    tis_cap: float | None = None

    def __post_init__(self) -> None:
        if self.old_logprobs not in OLD_LOGPROBS:
            raise ValueError(f"rollout_correction.old_logprobs must be one of {list(OLD_LOGPROBS)}, "
                             f"got {self.old_logprobs!r}")
        if self.tis_cap is not None and not self.tis_cap > 0:
            raise ValueError(f"rollout_correction.tis_cap must be > 0 or null, got {self.tis_cap}")
        if self.old_logprobs == "engine" and self.tis_cap is not None:
            raise ValueError("rollout_correction.tis_cap corrects the gap between engine and trainer log-probs, "
                             "which old_logprobs='engine' removes: set one of them")

    def resolve(self, engine_logprobs_exact: bool) -> str:
        """``"engine"`` or ``"recompute"`` for an engine whose log-probs are (or are not) the trainer's own."""
        if self.old_logprobs != "auto":
            return self.old_logprobs
        return "engine" if engine_logprobs_exact and self.tis_cap is None else "recompute"
