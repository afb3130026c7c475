"""A memory and throughput plan, on paper, for a composed config on a cluster we cannot run here::

    python -m dapo_lab.plan [--gpus-per-node 8] [--nodes 1] [--gpu h100] [--gpu-memory-gb 80] [override ...]
    python -m dapo_lab.plan --nodes 4 --gpu h100 scale=paper experiment=dapo rollout=vllm

It prints, per GPU: the training side (weights, gradients, AdamW state under the composed ``trainer.strategy``,
activations with and without checkpointing, the logits of a micro-batch), the vLLM side (weights per TP rank, KV
cache for the configured batch, with and without sleep mode), the largest micro-batch that fits, and tokens/s
estimates. The formulas are in :mod:`dapo_lab.plan_memory` (each with its doctest); ``tests/test_plan.py`` checks
them against the tiny model's autograd graph and the peak RSS of a real step.

Simplified: ``batch.*`` sizes are per process (as the trainer reads them), the cluster comes from the flags (not
``trainer.devices``), and every row is padded to the longest prompt plus ``L_max`` (the worst case a micro-batch
can hit).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dapo_lab import plan_memory as pm
from dapo_lab.plan_model import ModelDims, model_dims, param_count

CONF = Path(__file__).resolve().parents[2] / "conf"
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}
HEADROOM = 0.10  # of GPU memory kept free: CUDA context, NCCL buffers, allocator fragmentation (an assumption)
CHUNK = 1024  # tokens per chunk of the recommended chunked log-prob computation


def compose(overrides: list[str]) -> Any:
    """``conf/train.yaml`` composed with Hydra overrides, interpolations resolved."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def prompt_len(cfg: dict[str, Any]) -> tuple[int, str]:
    """The longest prompt ``P`` in tokens, and where it comes from."""
    data = cfg["data"]
    if str(data.get("_target_", "")).endswith("RunningSumTask"):
        from dapo_lab.data.task import task_prompt

        text = task_prompt((int(data["max_operand"]),) * int(data["max_terms"]))
        if str(cfg["model"].get("_target_", "")).endswith("TinyModel"):
            return len(text), "the task's longest prompt (byte tokenizer: a token per character)"
        return len(text), "the task's longest prompt in characters (an upper bound in BPE tokens)"
    return 2048, "assumed: verl's DAPO recipe max_prompt_length (set --prompt-len)"


def training_setup(cfg: dict[str, Any], world: int) -> tuple[pm.Numerics, pm.Sharding, str]:
    """Numerics and sharding of the composed ``trainer`` node, and a one-line description."""
    model_b = DTYPE_BYTES[cfg["model"]["dtype"]]
    precision = str(cfg["trainer"]["precision"])
    strategy = cfg["trainer"]["strategy"]
    target = str(strategy.get("_target_", "")) if isinstance(strategy, dict) else str(strategy)
    mixed = precision.endswith("-mixed")
    if target.endswith("FSDP2Strategy"):
        p = DTYPE_BYTES.get(strategy.get("param_dtype") or "", model_b)
        master = 4 if strategy.get("param_dtype") else model_b  # FSDP2Strategy upcasts to fp32 masters when it casts
        auto = mixed and p == 4
        n = pm.Numerics(master, 2 if auto else p, p, auto, 2 * master)
        s = pm.Sharding("fsdp2", world, param_offload=bool(strategy.get("cpu_offload")),
                        optimizer_offload=bool(strategy.get("cpu_offload")),
                        reshard_after_forward=bool(strategy.get("reshard_after_forward", True)), compute_bytes=p)
        return n, s, (f"FSDP2 over {world} ranks, params gathered in {p} B, master/AdamW in {master} B"
                      f"{', autocast' if auto else ''}")
    if target.endswith("DeepSpeedZeROStrategy"):
        bf16 = "16" in precision
        n = pm.Numerics(4, 2 if bf16 else 4, 2 if bf16 else 4, False, 12 if bf16 else 8)
        s = pm.Sharding("zero", world, stage=int(strategy.get("stage", 2)),
                        param_offload=bool(strategy.get("offload_parameters")),
                        optimizer_offload=bool(strategy.get("offload_optimizer")), compute_bytes=2 if bf16 else 4)
        return n, s, (f"DeepSpeed ZeRO-{s.stage} over {world} ranks"
                      f"{', bf16 weights with fp32 master weights in the optimizer' if bf16 else ', fp32'}")
    m = 2 if precision in ("bf16-true", "16-true") else model_b
    auto = mixed and m == 4
    n = pm.Numerics(m, 2 if auto else m, m, auto, 2 * m)
    label = "one process" if world == 1 else f"data parallel over {world} ranks (every rank holds everything)"
    return n, pm.Sharding("replicated", world, compute_bytes=n.compute), (
        f"{label}, weights in {m} B{', bf16 autocast' if auto else ''}")


def micro_rows(cfg: dict[str, Any], seq: int) -> tuple[int, str]:
    """Rows of a training micro-batch: ``micro_batch_size`` (or the token budget's rows), at most a rank's rows of
    a mini-batch (``mini_batch_prompts × group_size``)."""
    b = cfg["batch"]
    mini = int(b["mini_batch_prompts"]) * int(b["group_size"])
    if b.get("max_tokens_per_micro_batch"):
        budget = max(1, int(b["max_tokens_per_micro_batch"]) // seq)
        rows, why = min(budget, int(b["micro_batch_size"])), "batch.max_tokens_per_micro_batch // (P + R)"
    else:
        rows, why = int(b["micro_batch_size"]), "batch.micro_batch_size"
    return (rows, why) if rows <= mini else (mini, "a rank's mini-batch (mini_batch_prompts × group_size)")


@dataclass
class Cluster:
    nodes: int = 1
    gpus_per_node: int = 8
    gpu: str = "h100"
    memory_gib: float | None = None
    prompt_len: int | None = None
    mfu: float = 0.4
    bw_efficiency: float = 0.6

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass
class Plan:
    """Every number the report prints (bytes per GPU unless named otherwise)."""

    cfg: dict[str, Any]
    cluster: Cluster
    dims: ModelDims
    psi: int
    numerics: pm.Numerics
    sharding: pm.Sharding
    setup: str
    prompt: int
    prompt_why: str
    response: int
    rows: int
    rows_why: str
    checkpointing: bool
    attention: str
    states: list[tuple[str, str, int]]
    activations: dict[bool, int]  # checkpointing -> bytes of the configured micro-batch
    logits: int
    entropy_in_update: bool  # the update's forward also measures the entropy (engine π_old: no score pass)
    chunk: int | None = None  # batch.logprob_chunk_tokens: log-probs computed that many positions at a time

    @property
    def seq(self) -> int:
        return self.prompt + self.response

    @property
    def memory(self) -> int:
        gib = self.cluster.memory_gib or pm.GPUS[self.cluster.gpu].memory_gib
        return int(gib * pm.GiB)

    @property
    def state_bytes(self) -> int:
        return sum(b for _, _, b in self.states)

    def train_peak(self, checkpointing: bool | None = None, logits: int | None = None) -> int:
        """States + activations + logits of one micro-batch: the peak of an update's backward (steady state)."""
        ckpt = self.checkpointing if checkpointing is None else checkpointing
        return self.state_bytes + self.activations[ckpt] + (self.logits if logits is None else logits)

    @property
    def entropy_bytes(self) -> int:
        """The entropy chunk's temporaries when the update measures the entropy (a fixed cost, whatever the rows)."""
        return 21 * pm.ENTROPY_CHUNK * self.dims.vocab if self.entropy_in_update else 0

    def per_row(self, checkpointing: bool, chunked: bool = False) -> int:
        """Bytes one more row adds: its activations and logits (without the entropy chunk: see ``entropy_bytes``).
        ``chunked``: with the log-probs computed ``CHUNK`` positions at a time (as configured, when it is)."""
        chunk = self.chunk or CHUNK
        r, v = (min(self.response, chunk) if chunked or self.chunk else self.response), self.dims.vocab
        logits = 16 * r * v  # pm.logits_peak_bytes per row
        if self.entropy_in_update:
            logits = max(logits, (2 * r + 4 * r) * v)
        return self.activations[checkpointing] // self.rows + logits


def make_plan(cfg: dict[str, Any], cluster: Cluster) -> Plan:
    """The plan of a composed config (a plain dict, see :func:`compose`) on ``cluster``."""
    dims = model_dims(cfg["model"])
    psi = param_count(dims)
    numerics, sharding, setup = training_setup(cfg, cluster.world)
    prompt, prompt_why = (cluster.prompt_len, "--prompt-len") if cluster.prompt_len else prompt_len(cfg)
    response = int(cfg["generation"]["max_new_tokens"])
    rows, rows_why = micro_rows(cfg, prompt + response)
    strategy = cfg["trainer"]["strategy"]
    ckpt = bool(cfg["model"].get("gradient_checkpointing")) or (
        isinstance(strategy, dict) and bool(strategy.get("activation_checkpointing")))
    attention = str(cfg["model"].get("attn_implementation", "sdpa"))
    acts = {c: pm.activation_bytes(dims, rows, prompt + response, numerics, attention, c, kept=response)
            for c in (False, True)}
    states = pm.state_rows(dims, psi, sharding, numerics)
    entropy = entropy_in_update(cfg)
    chunk = cfg["batch"].get("logprob_chunk_tokens")
    kept = min(response, chunk) if chunk else response  # the positions whose logits exist at once
    logits = pm.logits_peak_bytes(rows, kept, dims.vocab, kept, pm.ENTROPY_CHUNK if entropy else 0)
    return Plan(cfg, cluster, dims, psi, numerics, sharding, setup, prompt, prompt_why, response, rows, rows_why,
                ckpt, attention, states, acts, logits, entropy, chunk)


def entropy_in_update(cfg: dict[str, Any]) -> bool:
    """Whether π_old comes from the engine, so the update's first epoch measures the entropy from its logits."""
    from dapo_lab.trainer.settings import RolloutCorrection

    rc, rollout = cfg["rollout_correction"], cfg["rollout"]
    exact = (str(rollout.get("_target_", "")).endswith("HFEngine") and rollout.get("autocast") is None
             and rollout.get("dtype") in (None, "auto", "bf16", "fp32"))  # HFEngine.logprobs_match_trainer
    return RolloutCorrection(rc["old_logprobs"], rc.get("tis_cap")).resolve(exact) == "engine"


def main(argv: list[str] | None = None) -> None:
    from dapo_lab.plan_report import render

    parser = argparse.ArgumentParser(prog="python -m dapo_lab.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--gpu", choices=sorted(pm.GPUS), default="h100")
    parser.add_argument("--gpu-memory-gb", type=float, default=None, help="GiB per GPU (default: the GPU's)")
    parser.add_argument("--prompt-len", type=int, default=None, help="longest prompt in tokens")
    parser.add_argument("--mfu", type=float, default=0.4, help="assumed fraction of bf16 peak in training")
    parser.add_argument("--bw-efficiency", type=float, default=0.6, help="assumed fraction of HBM bandwidth "
                        "in decoding")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    args = parser.parse_intermixed_args(argv)
    cluster = Cluster(args.nodes, args.gpus_per_node, args.gpu, args.gpu_memory_gb, args.prompt_len, args.mfu,
                      args.bw_efficiency)
    command = " ".join(["python -m dapo_lab.plan", *(argv if argv is not None else sys.argv[1:])])
    print(render(make_plan(compose(args.overrides), cluster), command), end="")


if __name__ == "__main__":
    main()
