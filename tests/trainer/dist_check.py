"""Two-rank DAPO runs under a Lightning strategy, and their single-process reference; run as scripts by
``test_trainer_distributed.py`` (pytest must not host a process group; every run is bounded by SIGKILL).

    python dist_check.py train TRAINER OUT STEPS [--kill-at STEP] [--resume] [--budget TOKENS] [--parity]
    python dist_check.py reference OUT STEPS [--budget TOKENS] [--perturb]

``--set KEY=VALUE`` adds an override to both (``model.compile=...``: to the run only; the reference stays eager).
:func:`reference` needs no process group, so the test calls it in its own process (one interpreter start fewer).
``train`` runs ``trainer=TRAINER`` on 2 processes (rank 1 forked from rank 0 after the imports, launched as torchrun
launches ranks) with a per-rank scripted reward: ranks keep different numbers of groups, and in step 2 rank 0 keeps
none; responses end at different lengths. Rank 0 records each step's global batch (every rank's groups, in global order)
and the final full weights; each rank records its update and dummy pass counts. ``reference`` replays the recorded
batches in ONE process with a plain AdamW and saves its weights: the distributed run must equal it within float
tolerance. ``--perturb`` then also replays the batches in another order (a negative control: that comparison must fail).
``--parity`` scores with a content-based reward instead of the script (a resumed run must not depend on how many times
the reward was called before the kill).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from helpers import PARITY, ScriptedReward, favour_eos, make_learner, make_run, run_on_forked_ranks  # noqa: E402

from dapo_lab.trainer import PlainOptimization  # noqa: E402
from dapo_lab.trainer.checkpoints import latest_checkpoint  # noqa: E402
from dapo_lab.trainer.distributed import full_state_dict  # noqa: E402
from dapo_lab.trainer.sharing import SharedBatch  # noqa: E402

COMPILED = {"graphs": 0, "calls": 0}  # what the counting backend below saw in this process


def counting_dynamo(gm: torch.fx.GraphModule, example_inputs: list) -> object:
    """``model.compile=counting_dynamo``: dynamo captures the layer (its guards, parameters as inputs, one graph for
    many shapes) and the captured graph runs as traced (no AOT autograd, no C++ build: cheap enough for CI), counting
    the graphs and their runs, so a test can tell the compiled layers really ran (dynamo falls back to eager
    silently when it gives up, e.g. past its recompile limit)."""
    COMPILED["graphs"] += 1

    def run(*args: object) -> object:
        COMPILED["calls"] += 1
        return gm.forward(*args)

    return run


# Registered once per process: the test imports this file for its reference, and pytest's --doctest-modules imports
# it again under another module name.
if "counting_dynamo" not in torch._dynamo.list_backends(exclude_tags=()):
    torch._dynamo.register_backend(counting_dynamo)


# Per rank, one pattern per generation round (4 groups of 4): M = mixed (informative), R / W = all right / wrong.
# Step 1: 3 + 3 kept, then 4 + 3 (surplus 5). Step 2: rank 0 keeps nothing, rank 1 keeps 4. Step 3: two rounds.
SCRIPTS = {0: ["MMWM", "MMMM", "RRRR", "MMMM", "MRMM", "MMMM"], 1: ["MMMR", "MWMM", "MMMM", "WWWW", "WWWW", "MMMM"]}
OVERRIDES = ["threads=1", "+trainer.limit_val_batches=0", "optim.lr=1e-2", "++sampling.max_gen_batches=3",
             "checkpoint.every_n_steps=1"]


EXTRA: list[str] = []  # --set KEY=VALUE overrides, for both the run and its reference


def overrides(budget: int | None) -> list[str]:
    return OVERRIDES + ([f"batch.max_tokens_per_micro_batch={budget}"] if budget else []) + EXTRA


class Record(L.Callback):
    """Each step's global batch (rank 0) and this rank's per-step counts; optionally SIGKILL the whole run."""

    def __init__(self, out: Path, kill_at: int | None) -> None:
        self.out, self.kill_at, self.batches, self.counts, self.hooks = out, kill_at, [], [], []

    def setup(self, trainer, module, stage) -> None:
        learner, collect, step = module.learner, module.learner.collect_groups, module.learner.step

        def recording_collect(index):
            shared, metrics = collect(index)
            everyone = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, list(zip(shared.positions, shared.groups)))
            self.batches.append([g for _, g in sorted((pg for rank in everyone for pg in rank), key=lambda x: x[0])])
            return shared, metrics

        def counting_step(index, optimization):
            metrics = step(index, optimization)
            self.counts.append({k: metrics.get(k) for k in ("actor/num_updates", "actor/dummy_passes",
                                                            "sampling/rank_groups", "sampling/batch_groups")})
            return metrics

        learner.collect_groups, learner.step = recording_collect, counting_step

    def on_train_start(self, trainer, module) -> None:
        learner = module.learner  # its generation context is set in configure_model, after `setup`
        generation_context, model = learner.generation_context, learner.model

        @contextlib.contextmanager
        def hook_counting_context():
            # Forward hooks on the policy's modules outside and inside generation: ZeRO-3's per-module hooks must be
            # off while decode loops run (full_weights), and back on for the update.
            self.hooks.append(["outside", sum(len(m._forward_hooks) for m in model.modules())])
            with generation_context():
                self.hooks.append(["inside", sum(len(m._forward_hooks) for m in model.modules())])
                yield

        learner.generation_context = hook_counting_context

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self.kill_at is not None and trainer.global_step == self.kill_at:
            os.killpg(0, signal.SIGKILL)  # the whole run, mid-flight, with no chance to clean up


def train(trainer_name: str, out: Path, steps: int, kill_at: int | None, resume: bool, budget: int | None,
          parity: bool) -> None:
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    reward = {} if parity else {"reward": ScriptedReward(SCRIPTS[rank], group_size=4)}
    built = make_run(out, f"trainer={trainer_name}", *overrides(budget), "trainer.precision=32-true",
                     *(PARITY if parity else []), steps=steps, **reward)
    favour_eos(built.learner)  # the same edit on both ranks: responses of different lengths
    record = Record(out, kill_at)
    built.trainer.callbacks.append(record)
    ckpt = latest_checkpoint(out) if resume else None
    built.trainer.fit(built.module, ckpt_path=str(ckpt) if ckpt else None)
    weights = {k: v.detach().clone() for k, v in full_state_dict(built.module.model).items()}  # a collective
    (out / f"rank{rank}.json").write_text(json.dumps({"counts": record.counts, "hooks": record.hooks,
                                                      "global_step": built.trainer.global_step,
                                                      "compiled": COMPILED}))
    if rank == 0:
        torch.save({"batches": record.batches, "weights": weights}, out / "run.pt")
    dist.barrier()  # no rank closes its sockets while a peer still reads from them (gloo aborts)
    dist.destroy_process_group()  # without it, gloo runs often abort at exit


def reference(out: Path, steps: int, budget: int | None, perturb: bool) -> None:
    """Replay the run's recorded batches in this process on one thread (the run's ranks had one each), writing
    ``reference.json`` (``perturbed.json`` with ``perturb``); the caller's thread count is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _reference(out, steps, budget, perturb)
    finally:
        torch.set_num_threads(threads)


def _reference(out: Path, steps: int, budget: int | None, perturb: bool) -> None:
    recorded = torch.load(out / "run.pt", weights_only=False)
    # The reference runs eager: a compiled distributed run must equal the plain single-process one.
    eager = [o for o in overrides(budget) if not o.startswith("model.compile=")]
    learner = make_learner(*eager, reward=ScriptedReward(["M"], group_size=4))
    favour_eos(learner)
    start = {k: v.clone() for k, v in learner.model.state_dict().items()}
    params = list(learner.model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.999), weight_decay=0.0)
    optimization = PlainOptimization(optimizer, params, grad_clip=1.0)
    for step, groups in enumerate(recorded["batches"][:steps]):
        groups = groups[::-1] if perturb else groups
        shared = SharedBatch(groups, list(range(len(groups))), len(groups), [])
        learner.collect_groups = lambda index, shared=shared: (shared, {"sampling/carried_groups": 0})
        learner.step(step, optimization)
    mine = learner.model.state_dict()
    theirs = recorded["weights"]
    # How far the two runs ended apart, against how far training moved the weights (AdamW turns float-rounding
    # differences of near-zero gradients into lr-sized steps, so elementwise ratios are the wrong yardstick).
    gap = torch.sqrt(sum(((theirs[k].float() - v.float()) ** 2).sum() for k, v in mine.items())).item()
    moved = torch.sqrt(sum(((v.float() - start[k].float()) ** 2).sum() for k, v in mine.items())).item()
    worst = max((theirs[k].float() - v.float()).abs().max().item() for k, v in mine.items())
    result = {"gap_over_movement": gap / moved, "movement": moved, "max_abs_diff": worst,
              "steps": len(recorded["batches"])}
    (out / ("perturbed.json" if perturb else "reference.json")).write_text(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["train", "reference"])
    parser.add_argument("args", nargs="+")
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--budget", type=int, default=None)
    parser.add_argument("--parity", action="store_true")
    parser.add_argument("--perturb", action="store_true")
    parser.add_argument("--set", action="append", default=[])
    a = parser.parse_args()
    EXTRA.extend(a.set)
    if a.mode == "train":
        run_on_forked_ranks(lambda: train(a.args[0], Path(a.args[1]), int(a.args[2]), a.kill_at, a.resume, a.budget,
                                          a.parity))
    else:  # --perturb: the reference, then its negative control, in one process (one start-up fewer)
        for perturb in [False, True] if a.perturb else [False]:
            reference(Path(a.args[0]), int(a.args[1]), a.budget, perturb)
