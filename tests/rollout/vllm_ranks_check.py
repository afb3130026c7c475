"""Two data-parallel ranks, each with its own colocated vLLM engine; run as a script by test_rollout_vllm_ranks.py.

    python vllm_ranks_check.py OUT

A 2-step ``trainer=cpu_ddp rollout=vllm`` run (lr 1e-2, so each step moves the policy). At the start of every step,
after the weight push, each rank decodes fixed prompts greedily with its vLLM engine and with a transformers engine
on the policy itself, and records both; rank 0 writes what every rank saw.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parents[1] / "trainer"))
from helpers import PARITY, make_run  # noqa: E402

from dapo_lab.rollout import HFEngine, SamplingParams  # noqa: E402

TEXTS = ["Add a=3 b=5. Last line: Answer: <sum>\n", "Add a=1 b=2 c=9. Last line: Answer: <sum>\n", "12+7="]


def main(out: Path) -> None:
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    built = make_run(out, "trainer=cpu_ddp", "rollout=vllm", "rollout.dtype=float32",
                     "rollout.kv_cache_memory_bytes=67108864", "model.num_heads=2", "model.num_kv_heads=1",
                     "optim.lr=1e-2", "sampling=none", "+trainer.limit_val_batches=0", *PARITY, steps=2)
    learner = built.learner
    prompts = [learner.tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    reference = HFEngine()
    reference.attach(learner.model, eos_id=learner.tokenizer.eos_token_id, pad_id=learner.pad_id)
    seen = []
    collect = learner.collect_groups

    def checking_collect(step):  # runs after this step's weight push (DAPOModule.on_train_batch_start)
        params = SamplingParams(temperature=0.0, max_new_tokens=12)
        vllm_out, hf_out = learner.rollout.generate(prompts, params), reference.generate(prompts, params)
        rows = lambda o: [ids[m].tolist() for ids, m in zip(o.response_ids, o.response_mask)]  # noqa: E731
        seen.append({"step": step, "vllm": rows(vllm_out), "hf": rows(hf_out)})
        return collect(step)

    learner.collect_groups = checking_collect
    built.trainer.fit(built.module)
    everyone = [None, None]
    dist.all_gather_object(everyone, seen)
    if rank == 0:
        (out / "ranks.json").write_text(json.dumps(everyone))
    learner.close()  # last: vLLM's shutdown tears down torch.distributed's default group


if __name__ == "__main__":
    main(Path(sys.argv[1]))
