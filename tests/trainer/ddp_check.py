"""Two-rank checks, run as a script by test_trainer_ddp.py (pytest must not host the process group).

    python ddp_check.py exact OUT            # gradients summed over ranks == single-process union gradient
    python ddp_check.py tensor_parallel OUT  # 2 ranks sharing one engine: same prompts, one copy of each group
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from helpers import PARITY, favour_eos, gradient_only, make_learner  # noqa: E402

from dapo_lab.rollout import HFEngine  # noqa: E402
from dapo_lab.trainer.distributed import sync_gradients  # noqa: E402
from dapo_lab.trainer.groups import assemble  # noqa: E402


def exact(rank: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("DDP_CHECK_PORT", "29533"))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    learner = make_learner("sampling=none", *PARITY)
    favour_eos(learner)  # ranks get responses of different lengths: local token means would be wrong
    shared, _ = learner.collect_groups(0)  # each rank generates its own prompts; then the balanced deal
    groups = shared.groups
    batch = assemble(groups, learner.pad_id, shared.positions, shared.total)
    old_logp, _, _ = learner.score(batch)
    advantages, _ = learner.advantage(batch.rewards, learner.batch_cfg.group_size)
    learner.model.zero_grad(set_to_none=True)
    learner.accumulate_gradients(batch, torch.arange(len(batch)), old_logp - 0.2, None, advantages,
                                 gradient_only(learner))
    sync_gradients(learner.model.parameters())
    distributed = [p.grad.clone() for p in learner.model.parameters()]
    gathered = [None, None]
    dist.all_gather_object(gathered, list(zip(shared.positions, groups)))
    dist.barrier()  # no rank closes its sockets while a peer still reads from them (gloo aborts)
    dist.destroy_process_group()
    if rank != 0:
        return
    union = assemble([g for _, g in sorted(gathered[0] + gathered[1], key=lambda pg: pg[0])], learner.pad_id)
    old_u, _, _ = learner.score(union)
    adv_u, _ = learner.advantage(union.rewards, learner.batch_cfg.group_size)
    learner.model.zero_grad(set_to_none=True)
    learner.accumulate_gradients(union, torch.arange(len(union)), old_u - 0.2, None, adv_u, gradient_only(learner))
    worst = max(((a - p.grad).abs().max() / p.grad.abs().max().clamp(min=1e-12)).item()
                for a, p in zip(distributed, learner.model.parameters()))
    lengths = [int(g.response_mask.sum()) for _, g in gathered[0]], [int(g.response_mask.sum()) for _, g in gathered[1]]
    differ = gathered[0][0][1].prompt_ids != gathered[1][0][1].prompt_ids
    (out / "exact.json").write_text(json.dumps({"max_rel_diff": worst, "tokens_per_rank": [sum(x) for x in lengths],
                                                "prompts_differ": differ}))


class SharedEngine(HFEngine):
    """An HF engine posing as one vLLM engine shared by 2 tensor-parallel ranks."""

    tensor_parallel_size = 2
    distributed_executor_backend = "external_launcher"


def tensor_parallel(rank: int, out: Path) -> None:
    """Ranks 0 and 1 form one engine group: they must generate the same prompts with the same seed, and only rank 0's
    groups enter the batch (no duplicates), dealt out to both ranks."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("DDP_CHECK_PORT", "29533"))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    learner = make_learner("sampling=none", *PARITY, rollout=SharedEngine())
    generated = []
    original = learner.rollout.generate

    def recording_generate(prompts, params):
        out_ = original(prompts, params)
        generated.append((prompts, params.seed, out_.response_ids.tolist()))
        return out_

    learner.rollout.generate = recording_generate
    shared, _ = learner.collect_groups(0)
    everything = [None, None]
    dist.all_gather_object(everything, {"generated": generated, "groups": [(p, g.response_ids.tolist())
                                                                           for p, g in zip(shared.positions,
                                                                                           shared.groups)]})
    dist.barrier()  # no rank closes its sockets while a peer still reads from them (gloo aborts)
    dist.destroy_process_group()
    if rank == 0:
        a, b = everything
        batch = [ids for _, ids in sorted(a["groups"] + b["groups"])]
        (out / "tp.json").write_text(json.dumps({
            "same_generation": a["generated"] == b["generated"],
            "groups_per_rank": [len(a["groups"]), len(b["groups"])],
            "distinct_groups": len({json.dumps(ids) for ids in batch}), "batch_groups": len(batch),
        }))


if __name__ == "__main__":
    check = {"exact": exact, "tensor_parallel": tensor_parallel}[sys.argv[1]]
    # fork: the ranks inherit this process's imports (torch, transformers, dapo_lab: ~12 s of CPU per interpreter on a
    # 2-core machine, which spawn would pay twice more); nothing here has run a torch op or started a thread yet.
    torch.multiprocessing.start_processes(check, args=(Path(sys.argv[2]),), nprocs=2, start_method="fork")
