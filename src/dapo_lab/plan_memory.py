"""The formulas of the memory and throughput plan (``python -m dapo_lab.plan``): pure functions of model dims,
shapes and byte sizes. All sizes are bytes; ``Ψ`` is the parameter count, ``N`` the number of ranks.

Activations are an explicit count of the tensors autograd saves in Hugging Face's ``Qwen2DecoderLayer``
(transformers 5.x), read off the autograd graph of the tiny model and checked against it exactly
(``tests/test_plan.py``), not Korthikanti et al.'s ``(34h + 5as)·s·b`` GPT-3 estimate: that one counts dropout
masks and a 4h GELU MLP, while Qwen2 has no dropout, a SwiGLU MLP of width ``i``, GQA, and RMSNorms that upcast to
fp32, and autocast adds its own copies. The three numerics of this codebase:

- ``autocast``: fp32 weights under bf16 autocast (the CPU default): fp32 residual stream, bf16 matmuls, and each
  linear casts its own copy of its input (q, k, v: three; gate, up: two).
- ``bf16``: bf16 weights (FSDP2 ``param_dtype: bf16``, a bf16 model, DeepSpeed bf16): one bf16 copy each.
- ``fp32``: fp32 weights, no autocast.

Simplified: the plan assumes padded micro-batches (every row ``P + R`` long, a padding mask present) and counts
no allocator overhead (see ``measure_peak`` in ``dapo_lab.plan_measure`` for what glibc adds on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from dapo_lab.plan_model import ModelDims, layer_params, linear_params

GiB = 2**30


@dataclass(frozen=True)
class Numerics:
    """Byte sizes of one training setup.

    Args:
        master: weights, gradients and AdamW moments as the optimizer holds them (the model's dtype; fp32 under
            DeepSpeed bf16, whose optimizer keeps fp32 master copies).
        compute: matmul inputs ``c`` (2 under bf16 or autocast).
        residual: the residual stream ``w`` (the dtype of the weights the forward runs with).
        autocast: fp32 weights under bf16 autocast (each linear casts its own input copy).
        optimizer: bytes per parameter of the optimizer state (2 AdamW moments; 12 = fp32 master + 2 moments under
            DeepSpeed bf16).
    """

    master: int
    compute: int
    residual: int
    autocast: bool
    optimizer: int


def layer_activation_bytes(d: ModelDims, seq: int, n: Numerics, attention: str) -> int:
    """Bytes autograd saves per token in one decoder layer, for rows ``seq`` tokens long (c = compute, w = residual):

        2 RMSNorms:  2·(4h + w·h + 4)     fp32 input copy, its normalised output in w, the fp32 rsqrt
        linears:     c·h·(n_qkv + n_gu + 1) + c·i    inputs of q/k/v, gate/up, o, down (n = 3, 2 under autocast, else 1)
        SwiGLU:      3·c·i                 gate output, silu output, up output
        eager:       3·c·h + 4·a·s + c·a·s q, k and v (k, v repeated to all heads), the fp32 softmax, its c copy
                                           (no copy in fp32)
        sdpa:        c·(h + 2·h_kv) + 4·a  q, and k and v at their KV heads (no mask: the trainer's rows are padded
                                           only after their last token, so sdpa runs causal with GQA), log-sum-exp
        flash_attention_2: 2·c·h + 2·c·h_kv + 4·a   q, k, v at kv heads, output, log-sum-exp (from flash-attn's
                                           backward signature; no flash-attn on CPU to check it)

    >>> from dapo_lab.plan_model import ModelDims
    >>> d = ModelDims("t", 256, 4, 4, 2, 688, 320, False)
    >>> layer_activation_bytes(d, 126, Numerics(4, 2, 4, True, 8), "eager")  # 34h + 8i + 6as + 8
    17240
    >>> layer_activation_bytes(d, 126, Numerics(2, 2, 2, False, 4), "eager")  # 24h + 8i + 6as + 8
    14680
    """
    h, i, a, c, w = d.hidden, d.intermediate, d.heads, n.compute, n.residual
    norms = 2 * (4 * h + w * h + 4)
    linears = c * h * ((3 if n.autocast else 1) + (2 if n.autocast else 1) + 1) + c * i
    swiglu = 3 * c * i
    if attention == "eager":
        attn = 3 * c * h + 4 * a * seq + (c * a * seq if c != 4 else 0)
    elif attention == "sdpa":
        attn = c * (h + 2 * d.kv_hidden) + 4 * a
    elif attention == "flash_attention_2":
        attn = 2 * c * h + 2 * c * d.kv_hidden + 4 * a
    else:
        raise ValueError(f"attention must be eager, sdpa or flash_attention_2, got {attention!r}")
    return norms + linears + swiglu + attn


def outside_layers_bytes(d: ModelDims, n: Numerics) -> int:
    """Bytes saved per token outside the layers: final norm ``4h + w·h + 4``, LM-head input ``c·h``, token ids 8.
    (RoPE's cos and sin, ``2·head_dim·w`` per position, are shared by a pass's rows: :func:`activation_bytes`.)

    >>> outside_layers_bytes(ModelDims("t", 256, 4, 4, 2, 688, 320, False), Numerics(4, 2, 4, True, 8))
    2572
    """
    h, w = d.hidden, n.residual
    return 4 * h + w * h + 4 + n.compute * h + 8


def activation_bytes(d: ModelDims, rows: int, seq: int, n: Numerics, attention: str, checkpointing: bool,
                     kept: int | None = None) -> int:
    """Saved activations of one micro-batch of ``rows × seq`` tokens (logits excluded).

        no checkpointing:  tokens·(L·layer + outside) + seq·2·head_dim·w
        checkpointing:     tokens·(L·w·h + layer + outside) + seq·2·head_dim·w   each layer keeps its input; one
                           layer is recomputed at a time in the backward

    (``seq·2·head_dim·w``: RoPE's cos and sin, one per position for all rows.) ``kept``: the positions the LM head
    runs on (a row's response positions, picked by ``index_select``); its input ``c·h`` and the 8-byte index are
    saved for those only (default: every position, no index).

    >>> d = ModelDims("t", 256, 4, 4, 2, 688, 320, False)
    >>> activation_bytes(d, 1, 126, Numerics(4, 2, 4, True, 8), "eager", False)  # 126·(4·17240 + 2572 + 2·64·4)
    9077544
    """
    tokens = rows * seq
    per_layer = layer_activation_bytes(d, seq, n, attention)
    layers = d.layers * n.residual * d.hidden + per_layer if checkpointing else d.layers * per_layer
    head_input = n.compute * d.hidden
    rope = seq * 2 * d.head_dim * n.residual
    head = tokens * head_input if kept is None else rows * kept * (head_input + 8)
    return tokens * (layers + outside_layers_bytes(d, n) - head_input) + rope + head


ENTROPY_CHUNK = 4096  # positions per chunk of the entropy in trainer/teacher_forced.py


def logits_peak_bytes(rows: int, response_len: int, vocab: int, seq: int = 0, entropy_chunk: int = 0) -> int:
    """Peak of the log-prob path (``trainer/teacher_forced.py``), the larger of

        backward: 16·rows·R·V        4 fp32 [rows, R, V]: the upcast logits log-softmax saves and three same-sized
                                     temporaries of its and gather's backward (measured: +3 over the forward's end)
        forward, when the pass also measures the entropy (``entropy_chunk`` positions at a time):
                  2·rows·s·V + 4·rows·R·V + 21·min(chunk, rows·R)·V
                                     the bf16 logits of the s = R response positions, the fp32
                                     ones, and entropy_from_logits' 5.25 fp32 copies of a chunk (z, p, p > 0, p·z,
                                     zeros, where)

    With ``batch.logprob_chunk_tokens`` = c the same holds with R = c: one chunk's logits exist at a time (each is
    recomputed in the backward).

    >>> logits_peak_bytes(4, 20480, 152064) / GiB  # the paper's micro-batch: 4 × 20k responses
    185.625
    >>> logits_peak_bytes(32, 96, 4096, seq=96, entropy_chunk=4096) / 2**20  # the forward's entropy dominates
    324.0
    """
    backward = 16 * rows * response_len * vocab
    forward = 0
    if entropy_chunk:
        forward = (2 * seq + 4 * response_len) * rows * vocab + 21 * min(entropy_chunk, rows * response_len) * vocab
    return max(backward, forward)


@dataclass(frozen=True)
class Sharding:
    """How the training states are spread over ``world`` ranks (the composed ``trainer.strategy``).

    Args:
        kind: ``replicated`` (one process, GradSyncDDP), ``fsdp2`` or ``zero``.
        world: data-parallel ranks ``N``.
        stage: ZeRO stage (1, 2, 3).
        param_offload: FSDP2 ``cpu_offload`` (everything) or ZeRO-3 ``offload_parameters``.
        optimizer_offload: ZeRO ``offload_optimizer`` (FSDP2's ``cpu_offload`` sets it too).
        reshard_after_forward: FSDP2: False keeps every gathered layer from the forward to the backward.
        compute_bytes: bytes of a gathered parameter (FSDP2 ``param_dtype``; ZeRO: the engine's dtype).
    """

    kind: str
    world: int
    stage: int = 0
    param_offload: bool = False
    optimizer_offload: bool = False
    reshard_after_forward: bool = True
    compute_bytes: int = 2


ZERO_BUCKET = 200_000_000  # Lightning's DeepSpeedStrategy reduce/allgather bucket sizes (elements)


def state_rows(d: ModelDims, psi: int, s: Sharding, n: Numerics) -> list[tuple[str, str, int]]:
    """``(item, formula, bytes per GPU)`` of the training states: weights, gradients, optimizer state, and the
    working set of the strategy (gathered units, buckets, autocast's cast copies).

        replicated: Ψ·m, Ψ·m, Ψ·k                        (m master bytes, k optimizer bytes per parameter)
        FSDP2:      Ψ·m/N, Ψ·m/N, Ψ·k/N; gathered in p: the root unit (embedding, head, final norm; never
                    resharded between forward and backward) and its unsharded gradient, 2 layers (one prefetched),
                    a layer's gradient in p and its fp32 reduce-scatter copy; reshard_after_forward=false: every
                    layer stays gathered
        ZeRO-1/2/3: weights Ψ·p (/N at 3), gradients Ψ·p (/N from 2), optimizer Ψ·k/N (ZeRO paper's accounting)

    >>> from dapo_lab.plan_model import QWEN25, param_count
    >>> d = QWEN25["7B"]; psi = param_count(d)
    >>> rows = state_rows(d, psi, Sharding("zero", 8, stage=3), Numerics(4, 2, 2, False, 12))
    >>> [round(b / GiB, 2) for _, _, b in rows]  # 16Ψ/8 = 14.2 GiB + two gathered layers and a reduce bucket
    [1.77, 1.77, 10.64, 1.24]
    """
    N, m, k, p = s.world, n.master, n.optimizer, s.compute_bytes
    layer = layer_params(d)
    root = d.vocab * d.hidden * (1 if d.tied else 2) + d.hidden
    cache = [("autocast cast copies", "2·(linear params)", 2 * linear_params(d))] if n.autocast else []
    if s.kind == "replicated":
        return [("weights", f"Ψ·{m}", psi * m), ("gradients", f"Ψ·{m}", psi * m),
                ("AdamW state", f"Ψ·{k}", psi * k), *cache]
    if s.kind == "fsdp2":
        on_gpu = 0 if s.param_offload else 1
        held = 2 * layer if s.reshard_after_forward else d.layers * layer  # gathered decoder layers
        gathered = ("gathered units", f"root·2·{p} + {'2' if s.reshard_after_forward else 'L'} layers·{p} + "
                    f"layer·({p}+4)", 2 * root * p + held * p + layer * (p + 4))
        where = "" if on_gpu else " (CPU)"
        return [(f"weights{where}", f"Ψ·{m}/N", on_gpu * psi * m // N),
                (f"gradients{where}", f"Ψ·{m}/N", on_gpu * psi * m // N),
                (f"AdamW state{where}", f"Ψ·{k}/N", on_gpu * psi * k // N), gathered, *cache]
    if s.kind == "zero":
        w = psi * p // (N if s.stage >= 3 else 1) * (0 if s.param_offload else 1)
        g = psi * p // (N if s.stage >= 2 else 1)
        o = 0 if s.optimizer_offload else psi * k // N
        work = (2 * layer + ZERO_BUCKET) * p if s.stage >= 3 else 2 * ZERO_BUCKET * p
        return [("weights", f"Ψ·{p}" + ("/N" if s.stage >= 3 else ""), w),
                ("gradients", f"Ψ·{p}" + ("/N" if s.stage >= 2 else ""), g),
                ("optimizer state" + (" (CPU)" if s.optimizer_offload else ""), f"Ψ·{k}/N", o),
                ("gathered + buckets", "2 layers + 2e8" if s.stage >= 3 else "2 × 2e8 elements", work)]
    raise ValueError(f"unknown sharding kind {s.kind!r}")


def max_rows(free_bytes: int, per_row_bytes: int) -> int:
    """The largest micro-batch (rows) whose row-proportional memory fits in ``free_bytes`` (0: not even one).

    >>> max_rows(10 * GiB, 3 * GiB), max_rows(-1, 3)
    (3, 0)
    """
    return max(0, free_bytes // per_row_bytes) if per_row_bytes > 0 else 0


def kv_cache_bytes(d: ModelDims, seqs: int, context: int, dtype_bytes: int, tp: int) -> int:
    """vLLM's KV cache per TP rank for ``seqs`` sequences of ``context`` tokens:
    ``seqs·context·L·2·max(1, kv_heads/TP)·head_dim·bytes`` (TP beyond the KV heads replicates them).

    >>> from dapo_lab.plan_model import QWEN25
    >>> kv_cache_bytes(QWEN25["32B"], 1, 1, 2, 1)  # 256 KiB per token: 64 layers × 2 × 8 heads × 128 × 2 B
    262144
    """
    return seqs * context * d.layers * 2 * max(1, d.kv_heads // tp) * d.head_dim * dtype_bytes


@dataclass(frozen=True)
class GPUSpec:
    name: str
    memory_gib: float  # what nvidia-smi reports, rounded
    bf16_tflops: float  # dense (no sparsity) peak
    hbm_tb_s: float  # memory bandwidth, 1e12 bytes/s


# NVIDIA's data sheets (SXM parts): H100 989 TFLOPS bf16 dense, 3.35 TB/s, 80 GB; H200 989, 4.8 TB/s, 141 GB;
# A100 312 TFLOPS, 2.04 TB/s (80 GB) / 1.56 TB/s (40 GB).
GPUS = {"h100": GPUSpec("H100 SXM", 80, 989, 3.35), "h200": GPUSpec("H200 SXM", 140, 989, 4.8),
        "a100": GPUSpec("A100 SXM 80GB", 80, 312, 2.04), "a100-40": GPUSpec("A100 SXM 40GB", 40, 312, 1.56)}


def train_flops_per_token(psi: int, d: ModelDims, seq: int, checkpointing: bool) -> float:
    """Forward + backward FLOPs per token: ``6·Ψ`` for the matmuls (``8·Ψ`` when checkpointing recomputes the
    forward) plus causal attention ``6·L·h·s`` (QKᵀ and AV, half the square, ×3 for the backward; ×4/3 recomputed).

    >>> from dapo_lab.plan_model import QWEN25, param_count
    >>> round(train_flops_per_token(param_count(QWEN25["7B"]), QWEN25["7B"], 4096, False) / 1e9, 1)
    48.2
    """
    factor = 8 if checkpointing else 6
    return factor * psi + factor * d.layers * d.hidden * seq


def train_tokens_per_s(flops_per_token: float, gpu: GPUSpec, mfu: float) -> float:
    """Training tokens/s per GPU: ``mfu × peak / flops_per_token`` (an assumed model-FLOPs utilisation).

    >>> round(train_tokens_per_s(6e9, GPUS["h100"], 0.4))
    65933
    """
    return mfu * gpu.bf16_tflops * 1e12 / flops_per_token


def decode_tokens_per_s(weight_bytes: int, kv_bytes_read: int, seqs: int, gpu: GPUSpec, efficiency: float) -> float:
    """Generated tokens/s of one engine (a TP group; bytes per rank): each decode step reads the rank's weights and
    the KV of every running sequence once and yields one token per sequence:
    ``seqs / ((weights + kv) / (efficiency × bandwidth))`` (memory-bound decoding).

    >>> round(decode_tokens_per_s(16 * GiB, 16 * GiB, 256, GPUS["h100"], 0.6))
    14976
    """
    return seqs * efficiency * gpu.hbm_tb_s * 1e12 / (weight_bytes + kv_bytes_read)


def gib(b: float) -> str:
    """Bytes as GiB, 2 decimals (tiny sizes in MiB).

    >>> gib(3 * GiB), gib(5 * 2**20)
    ('3.00 GiB', '5.0 MiB')
    """
    return f"{b / GiB:.2f} GiB" if abs(b) >= GiB / 10 or b == 0 else f"{b / 2**20:.1f} MiB"
