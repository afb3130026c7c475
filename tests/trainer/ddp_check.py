"""Two-rank checks, run as a script by test_trainer_ddp.py (pytest must not host the process group).

    python ddp_check.py exact OUT       # gradients summed over ranks == single-process union gradient
    python ddp_check.py lightning OUT   # 2 DAPO steps under Lightning with GradSyncDDPStrategy
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from helpers import favour_eos, make_module, make_trainer, parity_reward  # noqa: E402

from dapo_lab.algo import KeepAll  # noqa: E402
from dapo_lab.groups import assemble  # noqa: E402
from dapo_lab.reward import FunctionReward  # noqa: E402
from dapo_lab.strategy import GradSyncDDPStrategy, sync_gradients  # noqa: E402


def exact(rank: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("DDP_CHECK_PORT", "29533"))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    module = make_module(reward=FunctionReward(parity_reward), sampling=KeepAll())
    favour_eos(module)  # ranks get responses of different lengths: local token means would be wrong
    groups, _ = module.collect_groups()  # each rank its own slice of the prompt order
    batch = assemble(groups, module.pad_id)
    old_logp, _, _ = module._score_batch(batch)
    advantages, _ = module.advantage(batch.rewards, module.batch_cfg.group_size)
    module.model.zero_grad(set_to_none=True)
    module.accumulate_gradients(batch, torch.arange(len(batch)), old_logp - 0.2, None, advantages)
    sync_gradients(module.model.parameters())
    distributed = [p.grad.clone() for p in module.model.parameters()]
    gathered = [None, None]
    dist.all_gather_object(gathered, groups)
    dist.destroy_process_group()
    if rank != 0:
        return
    union = assemble(gathered[0] + gathered[1], module.pad_id)
    old_u, _, _ = module._score_batch(union)
    adv_u, _ = module.advantage(union.rewards, module.batch_cfg.group_size)
    module.model.zero_grad(set_to_none=True)
    module.accumulate_gradients(union, torch.arange(len(union)), old_u - 0.2, None, adv_u)
    worst = max(((a - p.grad).abs().max() / p.grad.abs().max().clamp(min=1e-12)).item()
                for a, p in zip(distributed, module.model.parameters()))
    lengths = [int(g.response_mask.sum()) for g in gathered[0]], [int(g.response_mask.sum()) for g in gathered[1]]
    differ = gathered[0][0].prompt_ids != gathered[1][0].prompt_ids
    (out / "exact.json").write_text(json.dumps({"max_rel_diff": worst, "tokens_per_rank": [sum(x) for x in lengths],
                                                "prompts_differ": differ}))


def lightning(out: Path) -> None:
    torch.set_num_threads(1)
    module = make_module(reward=FunctionReward(parity_reward), sampling={"max_gen_batches": 3})
    trainer = make_trainer(out, steps=2, strategy=GradSyncDDPStrategy(process_group_backend="gloo"), devices=2,
                           enable_checkpointing=False)
    trainer.fit(module)
    checksum = sum(p.double().sum().item() for p in module.model.parameters())
    rank = trainer.global_rank
    (out / f"rank{rank}.json").write_text(json.dumps({"checksum": checksum, "global_step": trainer.global_step}))
    dist.destroy_process_group()  # without it, gloo runs often abort at exit


if __name__ == "__main__":
    mode, target = sys.argv[1], Path(sys.argv[2])
    if mode == "exact":
        torch.multiprocessing.spawn(exact, args=(target,), nprocs=2)
    else:
        lightning(target)
