"""The Markdown report of :mod:`dapo_lab.plan`: training side, rollout side, throughput, recommendations and notes,
from a computed :class:`~dapo_lab.plan.Plan`. Everything here is arithmetic on the plan's numbers; the formulas
live in :mod:`dapo_lab.plan_memory`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dapo_lab import plan_memory as pm
from dapo_lab.plan import CHUNK, DTYPE_BYTES, HEADROOM, Plan

gib = pm.gib


@dataclass(frozen=True)
class Engine:
    """One vLLM engine (a TP group); bytes per rank."""

    tp: int
    weights: int  # Ψ·b/TP
    kv_per_seq: int  # one sequence at full context
    reserved: int  # what the engine holds while awake
    in_flight: int  # sequences whose KV fits in the reservation (vLLM queues the rest)
    tokens_per_s: float  # generated tokens/s per GPU (the engine's / TP)


# algo.sampling.ROUND_CAP_FACTOR (an oversampled round's default cap, × gen_prompts), repeated: the planner never
# imports torch. tests/test_plan.py checks that the two agree.
ROUND_CAP_FACTOR = 4


def sequences(plan: Plan) -> int:
    """Sequences an engine is asked for at once: a round's prompts × ``group_size``, at most ``max_num_seqs``. A round
    is ``gen_prompts``, or with ``sampling.oversample`` up to ``sampling.max_round_prompts`` (4 × ``gen_prompts`` if
    null) if that is more."""
    b, sampling = plan.cfg["batch"], plan.cfg.get("sampling") or {}
    prompts = int(b["gen_prompts"])
    if sampling.get("oversample"):
        cap = sampling.get("max_round_prompts")
        prompts = max(prompts, int(cap) if cap is not None else ROUND_CAP_FACTOR * prompts)
    return min(int(plan.cfg["rollout"].get("max_num_seqs", 256)), prompts * int(b["group_size"]))


def configured_reservation(plan: Plan, weights: int) -> int:
    r = plan.cfg["rollout"]
    if r.get("kv_cache_memory_bytes"):
        return weights + int(r["kv_cache_memory_bytes"])
    return int(float(r["gpu_memory_utilization"]) * plan.memory)


def engine(plan: Plan, tp: int, reserved: int | None = None) -> Engine:
    """The engine at ``tp`` with ``reserved`` bytes per rank (default: the configured reservation)."""
    dtype = plan.cfg["rollout"].get("dtype", "auto")
    b = DTYPE_BYTES[plan.cfg["model"]["dtype"] if dtype == "auto" else dtype]
    weights = plan.psi * b // tp
    per_seq = pm.kv_cache_bytes(plan.dims, 1, plan.seq, b, tp)
    reserved = configured_reservation(plan, weights) if reserved is None else reserved
    in_flight = int(min(sequences(plan), max(0, reserved - weights) // per_seq))
    kv_read = in_flight * pm.kv_cache_bytes(plan.dims, 1, plan.prompt + plan.response // 2, b, tp)  # mean context
    gpu = pm.GPUS[plan.cluster.gpu]
    tps = pm.decode_tokens_per_s(weights, kv_read, in_flight, gpu, plan.cluster.bw_efficiency) / tp if in_flight else 0.
    return Engine(tp, weights, per_seq, reserved, in_flight, tps)


def gather_bytes(plan: Plan) -> int:
    """Full weights gathered on every rank while generating (``generation_context``: FSDP2 and ZeRO-3), only for an
    engine that decodes with the training module (``rollout=hf``); vLLM decodes from its own copy."""
    s = plan.sharding
    if str(plan.cfg["rollout"].get("_target_", "")).endswith("VLLMEngine"):
        return 0
    return plan.psi * s.compute_bytes if s.kind == "fsdp2" or (s.kind == "zero" and s.stage >= 3) else 0


def optimizer_states(plan: Plan) -> int:
    """Weights, gradients and optimizer state on the GPU: what stays through generation."""
    return sum(b for item, _, b in plan.states if item.split(" ")[0] in ("weights", "gradients", "AdamW",
                                                                          "optimizer"))


def leftover(plan: Plan, usable: int, gather: bool) -> int:
    """Memory an engine could take while generating: the usable GPU less the training states (and the full-weight
    gather of ``generation_context``, as the code does now)."""
    return usable - optimizer_states(plan) - (gather_bytes(plan) if gather else 0)


def best_engine(plan: Plan, reserved: int) -> Engine | None:
    """The TP with the most generated tokens/s per GPU for an engine of ``reserved`` bytes; None if none fits a
    sequence."""
    gpus = plan.cluster.gpus_per_node
    engines = [engine(plan, tp, reserved) for tp in (1, 2, 4, 8) if tp <= gpus and gpus % tp == 0]
    best = max(engines, key=lambda e: e.tokens_per_s, default=None)
    return best if best is not None and best.in_flight else None


def global_batch_hint(b: dict[str, Any], world: int, engines: int) -> str:
    """How to make the configured batch the cluster's total: ``prompts_per_step`` and ``mini_batch_prompts`` are per
    process, ``gen_prompts`` per engine (a TP group)."""
    pps, mini, gen = int(b["prompts_per_step"]), int(b["mini_batch_prompts"]), int(b["gen_prompts"])
    if pps % world or gen % engines:
        return "the batch does not split evenly over the ranks"
    per_gen = f"batch.gen_prompts={gen // engines}"
    if mini % world == 0:
        return f"as the cluster's totals: `batch.prompts_per_step={pps // world} {per_gen} " \
               f"batch.mini_batch_prompts={mini // world}`"
    return (f"`batch.mini_batch_prompts={mini}` cannot be split over {world} ranks (one prompt per rank at least): "
            f"`batch.prompts_per_step={pps // world} {per_gen} batch.mini_batch_prompts=1` keeps the step's "
            f"{pps} prompts with {pps // world} updates instead of {pps // mini}")


def render(plan: Plan, command: str) -> str:
    d, c, b = plan.dims, plan.cluster, plan.cfg["batch"]
    gpu = pm.GPUS[c.gpu]
    vllm = str(plan.cfg["rollout"].get("_target_", "")).endswith("VLLMEngine")
    eng = engine(plan, int(plan.cfg["rollout"].get("tensor_parallel_size", 1))) if vllm else None
    sleep = vllm and bool(plan.cfg["rollout"].get("enable_sleep_mode"))
    during_update = eng.reserved if eng and not sleep else 0
    updates = int(b["ppo_epochs"]) * int(b["prompts_per_step"]) // int(b["mini_batch_prompts"])
    out = [f"Command: `{command}`", "",
           f"# Plan: {d.name} on {c.nodes} × {c.gpus_per_node} {gpu.name} ({plan.memory / pm.GiB:.0f} GiB each)", "",
           "Estimates on paper, not measurements (GiB = 2^30 bytes); the formulas and their doctests are in "
           "`src/dapo_lab/plan_memory.py`.", "", "## Model and batch", "",
           f"- {d.name}: hidden {d.hidden}, {d.layers} layers, {d.heads} heads ({d.kv_heads} KV, head_dim "
           f"{d.head_dim}), intermediate {d.intermediate}, vocab {d.vocab}, {'tied' if d.tied else 'untied'} "
           f"embeddings: **{plan.psi:,} parameters** ({d.source}).",
           f"- Micro-batch: **{plan.rows} rows** ({plan.rows_why}) × ({plan.prompt:,} prompt + {plan.response:,} "
           f"response) = {plan.rows * plan.seq:,} padded tokens; prompt length: {plan.prompt_why}.",
           f"- Per process and step: {b['prompts_per_step']} prompts × {b['group_size']} responses, {updates} updates "
           f"of {int(b['mini_batch_prompts']) * int(b['group_size'])} rows."
           + (f" `batch.*` is per process: the cluster trains {int(b['prompts_per_step']) * c.world:,} prompts per "
              f"step; {global_batch_hint(b, c.world, c.world // (eng.tp if eng else 1))}." if c.world > 1 else ""),
           "",
           "## Training side, per GPU", "",
           f"{plan.setup}; attention `{plan.attention}`; activation checkpointing "
           f"**{'on' if plan.checkpointing else 'off'}** as configured.", "",
           "| item | formula | per GPU |", "|---|---|--:|",
           *[f"| {item} | {formula} | {gib(nbytes)} |" for item, formula, nbytes in plan.states]]
    per_layer = pm.layer_activation_bytes(d, plan.seq, plan.numerics, plan.attention)
    outside = pm.outside_layers_bytes(d, plan.numerics)
    logits_formula = ("max(16·rows·R·V, 2·rows·s·V + 4·rows·R·V + 21·min(4096, rows·R)·V) B: the entropy is measured "
                      "in the update" if plan.entropy_in_update else "16·rows·R·V B")
    out += [f"| activations, no checkpointing | tokens·(L·{per_layer:,} + {outside:,}) B | "
            f"{gib(plan.activations[False])} |",
            f"| activations, checkpointing | tokens·(L·{plan.numerics.residual}·h + {per_layer:,} + {outside:,}) B | "
            f"{gib(plan.activations[True])} |",
            f"| logits of the micro-batch (peak) | {logits_formula} | {gib(plan.logits)} |"]
    usable = int(plan.memory * (1 - HEADROOM))
    for ckpt in (plan.checkpointing, not plan.checkpointing):
        peak = plan.train_peak(ckpt) + during_update
        extra = f" + engine {gib(during_update)}" if during_update else ""
        out.append(f"| **update peak, checkpointing {'on' if ckpt else 'off'}** | states + activations + logits"
                   f"{extra} | **{gib(peak)}** ({'fits' if peak <= usable else 'does not fit'}) |")
    free = usable - plan.state_bytes - during_update - plan.entropy_bytes
    out += ["", f"Largest micro-batch (rows of {plan.seq:,} tokens) in {gib(usable)} ({1 - HEADROOM:.0%} of the "
            "GPU, the rest left for the CUDA context, NCCL and fragmentation: an assumption):", "",
            "| | logits as configured" + (f" (chunked by {plan.chunk} tokens)" if plan.chunk else "")
            + f" | logits chunked by {plan.chunk or CHUNK} tokens |", "|---|--:|--:|",
            *[f"| checkpointing {'on' if ckpt else 'off'} | {pm.max_rows(free, plan.per_row(ckpt))} | "
              f"{pm.max_rows(free, plan.per_row(ckpt, chunked=True))} |" for ckpt in (False, True)]]
    share = plan.logits / (plan.logits + plan.activations[plan.checkpointing])
    out += ["", f"The logits are {share:.0%} of the micro-batch's memory"
            + (": **they dominate** (see the recommendations)." if share > 0.5 else "."), ""]
    fastest = best_engine(plan, leftover(plan, usable, True)) or best_engine(plan, leftover(plan, usable, False))
    out += rollout_section(plan, eng, usable) + throughput_section(plan, eng, fastest)
    out += ["## Recommendations", "", *[f"- {r}" for r in recommendations(plan, eng, usable, free)], "",
            "## Notes", "", *[f"- {n}" for n in notes(plan, eng)], ""]
    return "\n".join(out)


def rollout_section(plan: Plan, eng: Engine | None, usable: int) -> list[str]:
    r, states, gather = plan.cfg["rollout"], optimizer_states(plan), gather_bytes(plan)
    if eng is None:
        rows = min(int(r.get("max_batch", 256)), sequences(plan))
        kv = pm.kv_cache_bytes(plan.dims, rows, plan.seq, DTYPE_BYTES[plan.cfg["model"]["dtype"]], 1)
        peak = states + gather + kv
        return ["## Rollout side (rollout=hf: the training model decodes)", "",
                f"KV cache of {rows} rows at full length {gib(kv)}; generation peak ≈ states {gib(states)} + "
                f"gathered weights {gib(gather)} + KV = **{gib(peak)}** ({'fits' if peak <= usable else 'does not fit'}"
                ").", ""]
    now, ideal = leftover(plan, usable, True), leftover(plan, usable, False)
    out = ["## vLLM side, per GPU", "",
           f"Configured: `tensor_parallel_size={eng.tp}`, `gpu_memory_utilization={r['gpu_memory_utilization']}` "
           f"({gib(eng.reserved)} held while awake), `max_num_seqs={r.get('max_num_seqs')}`, sleep mode "
           f"{'on (level ' + str(r.get('sleep_level')) + ')' if r.get('enable_sleep_mode') else 'off'}; "
           f"{sequences(plan)} sequences of up to {plan.seq:,} tokens per round.", "",
           "Sequences in flight (generated tokens/s per GPU): with the configured reservation; with the engine given "
           f"all that training leaves while generating ({gib(now)}: sleep mode on, the full-weight gather as now); and "
           f"without that gather ({gib(ideal)}).", "",
           "| TP | weights / rank | KV per sequence / rank | configured | all training leaves | without the gather |",
           "|--:|--:|--:|--:|--:|--:|"]
    gpus = plan.cluster.gpus_per_node
    for tp in [t for t in (1, 2, 4, 8) if t <= gpus and gpus % t == 0]:
        cells = [engine(plan, tp, reserved) for reserved in (None, now, ideal)]
        out.append(f"| {tp}{' (configured)' if tp == eng.tp else ''} | {gib(cells[0].weights)} | "
                   f"{gib(cells[0].kv_per_seq)} | "
                   + " | ".join(f"{e.in_flight} ({e.tokens_per_s:,.0f})" for e in cells) + " |")
    gen = states + gather + eng.reserved
    out += ["", "| phase, configured TP | sleep off | sleep on (level 1: weights to host RAM; level 2: dropped) |",
            "|---|--:|--:|",
            f"| generation: states {gib(states)} + full-weight gather {gib(gather)} + engine | {gib(gen)} | "
            f"{gib(gen)} |",
            f"| update: training peak + engine | {gib(plan.train_peak() + eng.reserved)} | "
            f"{gib(plan.train_peak())} |", ""]
    if eng.weights > eng.reserved:
        out += [f"The configured engine cannot start: its weights per rank ({gib(eng.weights)}) exceed its reservation "
                f"({gib(eng.reserved)}).", ""]
    return out


def throughput_section(plan: Plan, eng: Engine | None, best: Engine | None) -> list[str]:
    c, b, gpu = plan.cluster, plan.cfg["batch"], pm.GPUS[plan.cluster.gpu]
    flops = pm.train_flops_per_token(plan.psi, plan.dims, plan.seq, plan.checkpointing)
    train_tps = pm.train_tokens_per_s(flops, gpu, c.mfu)
    recompute = not plan.entropy_in_update  # π_old from a trainer forward, not from the engine
    passes = int(b["ppo_epochs"]) + (1 / 3 if recompute else 0)  # a π_old forward costs a third of an update
    update_s = int(b["prompts_per_step"]) * int(b["group_size"]) * plan.seq * passes / train_tps  # padded rows
    out = ["## Throughput (estimates)", "",
           f"- Training: {flops / 1e9:,.3g} GFLOP per token ({'8' if plan.checkpointing else '6'}·Ψ + causal "
           f"attention at {plan.seq:,} tokens) at an assumed {c.mfu:.0%} of {gpu.bf16_tflops:.0f} bf16 TFLOPS: "
           f"**{train_tps:,.0f} tokens/s per GPU**."]
    gen = eng if eng is not None and eng.in_flight else best
    if gen is not None:
        which = "the configured engine" if gen is eng else f"TP={gen.tp}, the best of the vLLM table"
        out.append(f"- Generation ({which}): weights + KV read once per decode step at an assumed "
                   f"{c.bw_efficiency:.0%} of {gpu.hbm_tb_s} TB/s, {gen.in_flight} sequences in flight, mean context "
                   f"{plan.prompt + plan.response // 2:,}: **{gen.tokens_per_s:,.0f} tokens/s per GPU**.")
    gen_s = int(b["gen_prompts"]) * int(b["group_size"]) * plan.response / (gen.tokens_per_s * gen.tp) if gen else 0
    step = update_s + gen_s
    engines = c.world // (gen.tp if gen else 1)
    total = update_s / c.world + gen_s / max(engines, 1)
    out.append(f"- A step, upper bound (every response at L_max, one generation round"
               f"{', π_old recomputed' if recompute else ''}"
               f"{'' if gen else ', generation not estimated'}): {step / 3600:,.2f} h with `batch.*` as configured "
               "(per process)" + (f", {total / 3600:,.2f} h with it as the cluster's total." if c.world > 1 else "."))
    return [*out, ""]


def recommendations(plan: Plan, eng: Engine | None, usable: int, free: int) -> list[str]:
    out, seq = [], plan.seq
    fits_now = plan.train_peak() + (eng.reserved if eng and not plan.cfg["rollout"].get("enable_sleep_mode") else 0)
    if fits_now > usable:
        options = [(f"`micro_batch_size={pm.max_rows(free, plan.per_row(ck, ch))}` with checkpointing "
                    f"{'on' if ck else 'off'}{f' and log-probs chunked by {CHUNK} tokens' if ch else ''}",
                    pm.max_rows(free, plan.per_row(ck, ch))) for ck, ch in ((plan.checkpointing, False), (True, False),
                                                                          (True, True))]
        fit = next((text for text, rows in options if rows >= 1), None)
        out.append(f"The configured micro-batch does not fit; {fit} would." if fit else
                   f"No micro-batch fits: one {seq:,}-token row needs {gib(plan.per_row(True, True))} with "
                   f"checkpointing and chunked log-probs, {gib(free)} is free after the states: shard the sequence "
                   "(Ulysses sequence parallelism, as verl's long-response recipes do; not in this codebase) or cut "
                   "L_max.")
    if not plan.chunk and plan.logits > plan.activations[plan.checkpointing] and plan.response > CHUNK:
        out.append(f"Chunk the log-prob computation (`batch.logprob_chunk_tokens={CHUNK}`): the LM head and "
                   f"log-softmax over {CHUNK} response tokens at a time, recomputed in the backward, bound the logits "
                   f"at {gib(pm.logits_peak_bytes(plan.rows, min(CHUNK, plan.response), plan.dims.vocab))} instead "
                   f"of {gib(plan.logits)}.")
    if eng is not None:
        best, ideal = (best_engine(plan, leftover(plan, usable, g)) for g in (True, False))
        if best is not None and (best.tp != eng.tp or best.in_flight > eng.in_flight):
            out.append(f"vLLM: `rollout.tensor_parallel_size={best.tp} rollout.gpu_memory_utilization="
                       f"{best.reserved / plan.memory:.2f} rollout.enable_sleep_mode=true`: {best.in_flight} sequences "
                       f"in flight, {best.tokens_per_s:,.0f} tokens/s per GPU.")
        elif best is None:
            out.append("vLLM: no engine fits beside the training states and the full weights gathered for generation.")
        if ideal is not None and gather_bytes(plan) and (best is None or ideal.tokens_per_s > best.tokens_per_s):
            out.append(f"Without the full-weight gather while generating: TP={ideal.tp}, "
                       f"`gpu_memory_utilization={ideal.reserved / plan.memory:.2f}`, {ideal.in_flight} sequences in "
                       f"flight, {ideal.tokens_per_s:,.0f} tokens/s per GPU.")
    return out or ["The configured setting fits as it is."]


def notes(plan: Plan, eng: Engine | None) -> list[str]:
    out, s = [], plan.sharding
    if s.kind == "fsdp2" and plan.numerics.master == 2:
        out.append("FSDP2 without `param_dtype` keeps master weights, gradients and AdamW moments in `model.dtype` "
                   "(bfloat16 here); with `trainer.strategy.param_dtype=bf16` they are fp32 (the model is upcast "
                   f"before sharding): {gib(plan.psi * 16 // s.world)} of states per GPU instead of "
                   f"{gib(plan.psi * 8 // s.world)}.")
    if plan.attention == "sdpa":
        out.append("`sdpa` with padded rows passes a mask, so each layer saves a [rows, 1, s, s] bias and k, v "
                   "repeated to every head (both counted); `flash_attention_2` saves neither (its formula is "
                   "unchecked here: no flash-attn on CPU).")
    out.append("Not modelled: allocator fragmentation beyond the headroom (on CPU glibc held 30-130% above the tiny "
               "step's live tensors: README \"Scaling out\"), the π_old forward (no grad: below an update's peak), "
               "vLLM's activation workspace, the one-tensor-at-a-time weight push.")
    return out
