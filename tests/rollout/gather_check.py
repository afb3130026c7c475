"""Two-rank check of the weight gather behind ``VLLMEngine.update_weights``, run as a script by
test_rollout_gather.py (pytest must not host the process group).

    python gather_check.py OUT    # FSDP2 (fully_shard, DTensor shards): full tensors on every rank
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.fsdp import fully_shard

from dapo_lab.models.tiny import build_tiny
from dapo_lab.trainer.distributed import full_state_dict, iter_full_weights


def check(rank: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("GATHER_CHECK_PORT", "29541"))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    model, _ = build_tiny(seed=0, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    sharded = all(type(p).__name__ == "DTensor" for p in model.parameters())
    full = full_state_dict(model)
    largest = 0
    streamed = {}
    for name, tensor in iter_full_weights(model):  # one full tensor at a time
        largest = max(largest, tensor.numel())
        streamed[name] = tensor.clone()
    result = {
        "sharded": sharded,
        "same_names": sorted(full) == sorted(reference),
        "plain_tensors": all(type(v) is torch.Tensor for v in full.values()),
        "equal": all(torch.equal(full[k], reference[k]) for k in reference),
        "streamed_equal": sorted(streamed) == sorted(reference)
        and all(torch.equal(streamed[k], reference[k]) for k in reference),
        "streamed_order": list(streamed) == list(reference),
        "largest_is_one_tensor": largest == max(v.numel() for v in reference.values()),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()  # no rank closes its sockets while a peer still reads from them (gloo aborts)
    dist.destroy_process_group()
    # Leave before interpreter finalization: gloo worker threads that still hold a FSDP2 work object abort the
    # process (SIGABRT, "terminate called without an active exception") when its tensors are freed without the GIL
    # (pytorch PR 179291). The results are on disk and every collective has finished.
    os._exit(0)


if __name__ == "__main__":
    # fork: the ranks inherit this process's imports (~10 s of CPU per interpreter on a 2-core machine, which spawn
    # would pay twice more); nothing here has run a torch op or started a thread yet.
    mp.start_processes(check, args=(Path(sys.argv[1]),), nprocs=2, start_method="fork")
