"""Data parallelism for the DAPO step under Lightning: the strategies of ``conf/trainer/`` and the
:class:`~dapo_lab.trainer.optimization.Optimization` that drives Lightning's optimizer.

- ``GradSyncDDPStrategy`` (``cpu_ddp``, ``gpu_ddp``): Lightning's DDP launcher and process group without the DDP
  wrapper; gradients are summed across ranks once per optimizer update. Why not Lightning's DDP: Lightning runs the
  whole ``training_step`` inside one forward of the DDP wrapper, while a DAPO step runs many backward passes
  (micro-batches × mini-batches) after it; DDP's reducer prepares for exactly one backward per forward. Summing
  once per update is also exact: each rank's loss is already divided by the *global* token/sequence count, so the
  sum is the gradient of the whole mini-batch.
- ``FSDP2Strategy`` (``cpu_fsdp``, ``gpu_fsdp``): Lightning's ``ModelParallelStrategy`` with PyTorch's FSDP2
  (``fully_shard``) on every decoder layer and the root, as the data-parallel group (no tensor parallelism), with
  optional mixed precision, CPU offload and activation checkpointing. Every forward and backward is a collective,
  which the learner's equal pass counts make safe; generation runs on gathered full weights (:meth:`full_weights`).
- ``DeepSpeedZeROStrategy`` (``*_deepspeed_zero2``, ``*_deepspeed_zero3``): Lightning's ``DeepSpeedStrategy``, also
  on CPU (gloo), which Lightning's own refuses and DeepSpeed itself supports. Gradient clipping is DeepSpeed's
  (``gradient_clipping``); the accumulation boundary is set by hand on the last pass of each update.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, ModelParallelStrategy
from torch import Tensor

from dapo_lab.trainer import distributed
from dapo_lab.trainer.distributed import sync_gradients


class GradSyncDDPStrategy(DDPStrategy):
    """Lightning's DDP processes without the DDP wrapper: rank 0's weights are broadcast at start-up, and the learner's
    optimization sums gradients over ranks once per update (see the module docstring for why).

    Args:
        process_group_backend: ``gloo`` (CPU) or ``nccl`` (GPU); null: Lightning's choice for the device.
    """

    strategy_name = "dapo_ddp"

    def configure_ddp(self) -> None:
        with torch.no_grad():
            for tensor in [*self.model.parameters(), *self.model.buffers()]:
                dist.broadcast(tensor.data, src=0)


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, None: None}


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a Hugging Face causal LM (the classes its ``_no_split_modules`` names), the units
    to shard and checkpoint one by one."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(model).__name__}: no decoder layers found (its _no_split_modules is {names or None})")
    return layers


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 data parallelism over every process (``devices × num_nodes``), through Lightning.

    Args:
        param_dtype: ``"bf16"`` (GPU default): parameters are gathered and computed in bf16 while the sharded
            master weights and the optimizer are fp32 (a model loaded in bf16 is upcast before sharding); null: the
            model's dtype throughout.
        reduce_dtype: dtype of the gradient reduce-scatter (``"fp32"``: exact sums of bf16 gradients).
        cpu_offload: keep sharded parameters, gradients and optimizer state in CPU memory (FSDP2's
            ``CPUOffloadPolicy``); the optimizer step then runs on the CPU.
        activation_checkpointing: recompute each decoder layer's activations in the backward instead of storing
            them (transformers' gradient checkpointing, non-reentrant).
        reshard_after_forward: free gathered parameters after each layer's forward (ZeRO-3-like); False keeps them
            until the backward (ZeRO-2-like: more memory, one all-gather fewer).
        save_distributed_checkpoint: each rank writes its own shard (a checkpoint folder); False gathers on rank 0.
        process_group_backend: ``gloo`` (CPU) or ``nccl`` (GPU); null: Lightning's choice for the device.
    """

    def __init__(self, param_dtype: str | None = None, reduce_dtype: str | None = "fp32", cpu_offload: bool = False,
                 activation_checkpointing: bool = False, reshard_after_forward: bool = True,
                 save_distributed_checkpoint: bool = True, process_group_backend: str | None = None) -> None:
        for name, value in (("param_dtype", param_dtype), ("reduce_dtype", reduce_dtype)):
            if value not in _DTYPES:
                raise ValueError(f"trainer.strategy.{name} must be one of {sorted(k for k in _DTYPES if k)} or "
                                 f"null, got {value!r}")
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend)
        self.param_dtype, self.reduce_dtype, self.cpu_offload = param_dtype, reduce_dtype, cpu_offload
        self.activation_checkpointing, self.reshard_after_forward = activation_checkpointing, reshard_after_forward

    def setup_environment(self) -> None:
        # One data-parallel dimension over every process (ModelParallelStrategy's "auto" means one per node).
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def parallelize(self, model: torch.nn.Module) -> None:
        """Shard ``model`` in place: each decoder layer, then the root (idempotent: Lightning calls
        ``configure_model`` before every fit and validate)."""
        from torch.distributed.fsdp import (
            CPUOffloadPolicy,
            FSDPModule,
            MixedPrecisionPolicy,
            OffloadPolicy,
            fully_shard,
        )

        if isinstance(model, FSDPModule):
            return
        if self.param_dtype is not None:
            # Mixed precision keeps fp32 master weights (and so fp32 gradients and AdamW moments) in the shards and
            # computes in param_dtype; a model loaded in bf16 would otherwise keep its bf16 master copy.
            model.to(torch.float32)
        if self.activation_checkpointing:
            (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        kwargs = dict(mesh=self.device_mesh["data_parallel"], reshard_after_forward=self.reshard_after_forward,
                      mp_policy=MixedPrecisionPolicy(param_dtype=_DTYPES[self.param_dtype],
                                                     reduce_dtype=_DTYPES[self.reduce_dtype]),
                      offload_policy=CPUOffloadPolicy() if self.cpu_offload else OffloadPolicy())
        for layer in decoder_layers(model):
            fully_shard(layer, **kwargs)
        fully_shard(model, **kwargs)

    @contextlib.contextmanager
    def full_weights(self, model: torch.nn.Module) -> Iterator[None]:
        """Gather every shard once (a collective: every rank enters together) and keep the full weights through any
        number of forwards, with no collective between them: generation's decode loops run different numbers of
        forwards on different ranks."""
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for unit in units:
            unit.unshard()
            unit.set_reshard_after_forward(False, recurse=False)
        try:
            yield
        finally:
            for unit in units:
                unit.reshard()
                unit.set_reshard_after_forward(self.reshard_after_forward, recurse=False)


class DeepSpeedZeROStrategy(DeepSpeedStrategy):
    """DeepSpeed ZeRO (stage 1, 2 or 3) for the DAPO step, on GPU (nccl) or CPU (gloo).

    Args:
        stage: ZeRO stage: 2 shards gradients and optimizer state; 3 also the parameters (every forward gathers them).
        grad_clip: global gradient-norm clip, applied by DeepSpeed in its step (set from ``optim.grad_clip``).
        offload_optimizer: optimizer state and step in CPU memory (ZeRO-Offload).
        offload_parameters: stage 3 only: parameters in CPU memory between uses.
        process_group_backend: ``gloo`` (CPU) or ``nccl`` (GPU); null: Lightning's choice for the device.
    """

    def __init__(self, stage: int = 2, grad_clip: float = 1.0, offload_optimizer: bool = False,
                 offload_parameters: bool = False, process_group_backend: str | None = None) -> None:
        if stage not in (1, 2, 3):
            raise ValueError(f"trainer.strategy.stage must be 1, 2 or 3, got {stage}")
        if offload_parameters and stage != 3:
            raise ValueError("trainer.strategy.offload_parameters needs stage 3")
        super().__init__(stage=stage, offload_optimizer=offload_optimizer, offload_parameters=offload_parameters,
                         process_group_backend=process_group_backend, logging_batch_size_per_gpu=1)
        self.config["gradient_clipping"] = grad_clip

    def setup_environment(self) -> None:
        if self.root_device.type == "cpu":
            # DeepSpeed runs on CPU with its "cpu" accelerator; Lightning's DeepSpeedStrategy refuses any non-CUDA
            # accelerator (and checks CUDA device indices), so those two checks are skipped on CPU.
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
            DDPStrategy.setup_environment(self)
        else:
            super().setup_environment()

    def setup_distributed(self) -> None:
        if self.root_device.type != "cpu":
            return super().setup_distributed()
        from lightning.fabric.utilities.seed import reset_seed

        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def init_deepspeed(self) -> None:
        if self.root_device.type != "cpu":
            return super().init_deepspeed()
        import deepspeed

        # Lightning hands DeepSpeed ``device_rank=root_device.index``, which a CPU device does not have (None);
        # DeepSpeed's CPU accelerator wants the local rank there.
        original = deepspeed.initialize

        def initialize(*args, **kwargs):
            if getattr(kwargs.get("args"), "device_rank", 0) is None:
                kwargs["args"].device_rank = self.local_rank
            return original(*args, **kwargs)

        deepspeed.initialize = initialize
        try:
            super().init_deepspeed()
        finally:
            deepspeed.initialize = original

    @contextlib.contextmanager
    def full_weights(self, model: torch.nn.Module) -> Iterator[None]:
        """ZeRO-3: gather every partitioned parameter for generation (a collective: all ranks enter together), and
        take DeepSpeed's per-module hooks off the model meanwhile.

        Why the hooks go: each forward's post-hooks look ahead through ZeRO-3's recorded module trace for parameters
        to keep. A step's trace recorded decode loops of thousands of forwards, so the next step's generation paid
        O(trace) per module call: the first step of a 2-layer test model took 65-72 s, 1 s without the hooks
        (``py-spy``: 90% in ``PartitionedParameterCoordinator.__params_to_release``); at the default model's size
        the hooks also issued collectives inside decode loops of unequal length (a gloo crash at the first
        evaluation, ``experiments/LOG.md`` 2026-12-01). With the weights gathered the
        hooks have nothing to do; they are registered again afterwards, which also restarts the trace (DeepSpeed's
        own ``unwrap_model_for_generation`` does the same, without restoring the hooks when generation raises)."""
        if not self.zero_stage_3:
            yield
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            offload = self._zero3_parameter_offload()
            if offload is None:
                yield
                return
            for hook in offload.forward_hooks + offload.backward_hooks:
                hook.remove()
            offload.forward_hooks, offload.backward_hooks = [], []
            try:
                yield
            finally:
                offload._register_deepspeed_module(offload.module)

    def _zero3_parameter_offload(self) -> Any:
        """The DeepSpeed object that holds ZeRO-3's module hooks (``forward_hooks``/``backward_hooks``), or None."""
        optimizer = getattr(self.model, "optimizer", None)  # self.model: the DeepSpeedEngine once set up
        offload = getattr(optimizer, "parameter_offload", optimizer)
        return offload if hasattr(offload, "forward_hooks") and hasattr(offload, "module") else None


class LightningOptimization:
    """The learner's updates through a LightningModule's optimizer and strategy (manual optimization).

    - backward: ``manual_backward`` (precision and strategy hooks). Each rank's loss is its share of the
      mini-batch loss, so rank gradients must be *summed*: ``GradSyncDDPStrategy`` sums them itself in ``step``;
      strategies that average inside backward (DDP, FSDP) get the loss times the world size.
    - step: every update goes through the strategy's ``optimizer_step`` (precision plugin, sharded optimizers);
      only the step's last one goes through Lightning's optimizer wrapper, which counts it, so ``global_step``
      counts DAPO steps (the paper's x-axis). This assumes a precision without a grad scaler (32 or bf16-mixed).
    """

    def __init__(self, module: Any, grad_clip: float) -> None:
        self.module, self.grad_clip = module, grad_clip
        self.sums_itself = isinstance(module.trainer.strategy, GradSyncDDPStrategy)
        self.deepspeed = isinstance(module.trainer.strategy, DeepSpeedStrategy)
        # DeepSpeed keeps reduced gradients in its own partitions, which only its step clears: a NaN update there
        # cannot be skipped with the optimizer untouched, so the learner stops the run instead (last good state).
        self.can_skip = not self.deepspeed

    def _parameters(self) -> list[torch.nn.Parameter]:
        return list(self.module.model.parameters())

    def zero_grad(self) -> None:
        self.module.optimizers().zero_grad(set_to_none=True)

    def backward(self, loss: Tensor, *, sync: bool = True) -> None:
        engine = self.module.trainer.model if self.deepspeed else None
        if engine is not None:  # DeepSpeed reduces gradients at an accumulation boundary: the update's last pass
            engine.set_gradient_accumulation_boundary(sync)
        self.module.manual_backward(loss if self.sums_itself else loss * distributed.world_size())
        if engine is not None and hasattr(engine.optimizer, "clear_backward_seen_flag"):
            # DeepSpeed >= 0.18 counts accumulated passes at the start of the engine's next forward; the learner
            # calls the policy directly, so count here. Without it ZeRO-3 keeps only the last pass's gradient.
            engine.optimizer.clear_backward_seen_flag()

    def step(self, *, last: bool, skip: bool = False) -> float:
        norm = None
        if not skip and self.sums_itself:
            sync_gradients(self._parameters())
        if not skip and not self.deepspeed:  # DeepSpeed clips in its own step (its gradients live in its partitions)
            norm = torch.nn.utils.clip_grad_norm_(self._parameters(), self.grad_clip)
            if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2: the norm over every shard
                norm = norm.full_tensor()
            skip = not math.isfinite(float(norm))  # the global norm: every rank decides alike
        if skip:  # NaN/Inf: no update; the DAPO step still counts
            if last:
                self.skip_step()
            else:
                self.module.optimizers().zero_grad(set_to_none=True)
            return float("nan")
        optimizer = self.module.optimizers()
        if last:
            optimizer.step()  # Lightning's wrapper: global_step += 1
        else:
            self.module.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None, model=self.module)
        if self.deepspeed:
            norm = self.module.trainer.model.get_global_grad_norm()
        return float(norm)

    def skip_step(self) -> None:
        optimizer = self.module.optimizers()
        if self.deepspeed:
            # DeepSpeed's step always steps its partitions: count the DAPO step with the hooks Lightning's manual
            # loop gives its optimizer wrapper, and leave the engine alone.
            optimizer._on_before_step()
            optimizer._on_after_step()
            return
        # No gradient at all: AdamW skips every parameter (weights and moments untouched); the wrapper still
        # counts the DAPO step. Gradients left from the previous step must not be replayed, hence the clear.
        optimizer.zero_grad(set_to_none=True)
        optimizer.step()
