"""Where a job runs and whether it already ran: GPU slots for a sweep on one machine, and the completion marker that
lets a re-run sweep skip its finished jobs. ``dapo_lab.run.main`` calls both first, before anything touches CUDA.

GPU slots (``sweep_gpus``, ``jobs_per_gpu``) are for launchers that run a sweep's jobs on ONE machine (``basic``,
``joblib``, ``submitit_local``): each job process claims a free slot (an ``flock`` on a file under the sweep
directory) and sets ``CUDA_VISIBLE_DEVICES`` to that slot's GPU. On SLURM (``submitit_slurm``) every job gets its
own GPUs from the scheduler: leave ``sweep_gpus`` null there.

Simplified: a slot belongs to a *process*, not to a job number. The joblib launcher runs jobs in reused worker
processes, and once a process has initialised CUDA a new ``CUDA_VISIBLE_DEVICES`` has no effect on it; a slot chosen
from the job number (``num // jobs_per_gpu % gpus``) would move between jobs of one worker and double up GPUs as
soon as jobs take unequal times. A process claims once and keeps its slot until it exits (the lock goes with it).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import IO

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

DONE = "done.json"  # written last by a run that finished: a re-run with resume=auto skips it
SLOT_ENV = "DAPO_GPU_SLOT"  # set once a process holds a slot (inherited by the ranks Lightning starts from it)
_held: list[IO[str]] = []  # the open lock file of this process's slot: closing it would free the slot


def slot_gpus(gpus: int, jobs_per_gpu: int = 1) -> list[int]:
    """The GPU index of each of ``gpus × jobs_per_gpu`` slots, in the order they are claimed: round robin over the
    GPUs, so fewer jobs than slots still spread over every GPU.

    >>> slot_gpus(2)
    [0, 1]
    >>> slot_gpus(2, jobs_per_gpu=3)
    [0, 1, 0, 1, 0, 1]
    """
    if gpus < 1 or jobs_per_gpu < 1:
        raise ValueError(f"sweep_gpus and jobs_per_gpu must be >= 1, got {gpus} and {jobs_per_gpu}")
    return [slot % gpus for slot in range(gpus * jobs_per_gpu)]


def claim_slot(lock_dir: str | Path, gpus: int, jobs_per_gpu: int = 1) -> tuple[int, IO[str]]:
    """Claim the first free slot under ``lock_dir``: returns ``(slot, lock_file)``; the slot is held until
    ``lock_file`` is closed or the process exits (killed included). Raises ``RuntimeError`` when every slot is held.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> a, fa = claim_slot(d, 2)
    >>> b, fb = claim_slot(d, 2)
    >>> (a, b)
    (0, 1)
    >>> fa.close(); claim_slot(d, 2)[0]   # a freed slot is claimed again
    0
    """
    import fcntl  # POSIX only: imported here so that the module imports anywhere

    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    gpu_of = slot_gpus(gpus, jobs_per_gpu)
    for slot in range(len(gpu_of)):
        handle = open(lock_dir / f"slot-{slot}.lock", "w")  # noqa: SIM115 (held open: the lock lives with it)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return slot, handle
    raise RuntimeError(f"all {len(gpu_of)} GPU slots (sweep_gpus={gpus} x jobs_per_gpu={jobs_per_gpu}) under "
                       f"{lock_dir} are held by other jobs: run at most that many jobs at once "
                       "(hydra.launcher.n_jobs for joblib)")


def _hydra_dirs(out: Path) -> tuple[Path, int | None]:
    """The directory the jobs of this sweep share (the run directory for a single run) and the job number."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except ValueError:  # composed without @hydra.main (tests, notebooks)
        return out, None
    if hc.mode == RunMode.MULTIRUN:
        return Path(hc.sweep.dir).resolve(), hc.job.get("num")
    return out, None


def claim_gpu(cfg: DictConfig, out: Path) -> str | None:
    """With ``sweep_gpus`` set, give this job process one GPU of the machine (its slot's) through
    ``CUDA_VISIBLE_DEVICES``; returns the device it set, or None. Call it before anything initialises CUDA.

    A process that already holds a slot (an earlier job of the same joblib worker or basic-launcher process, or a
    rank that Lightning started from it) keeps it. GPU indices count the devices already visible: with
    ``CUDA_VISIBLE_DEVICES=4,5`` and ``sweep_gpus=2`` the slots' GPUs are 4 and 5."""
    gpus = cfg.get("sweep_gpus")
    if not gpus or os.environ.get(SLOT_ENV) is not None:
        return None
    jobs_per_gpu = int(cfg.get("jobs_per_gpu") or 1)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d for d in visible.split(",") if d.strip()] if visible is not None else [str(i) for i in range(gpus)]
    if len(devices) < gpus:
        raise ValueError(f"sweep_gpus={gpus} but CUDA_VISIBLE_DEVICES={visible!r} shows {len(devices)} device(s) "
                         "(submitit_local: set hydra.launcher.gpus_per_node too)")
    shared, num = _hydra_dirs(out)
    slot, handle = claim_slot(shared / ".gpu_slots", int(gpus), jobs_per_gpu)
    _held.append(handle)
    device = devices[slot_gpus(int(gpus), jobs_per_gpu)[slot]]
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    os.environ[SLOT_ENV] = str(slot)
    log.info("GPU slot %d of %d (job %s, pid %d): CUDA_VISIBLE_DEVICES=%s", slot, gpus * jobs_per_gpu, num,
             os.getpid(), device)
    return device


# srun's names for what torchrun calls RANK, LOCAL_RANK, WORLD_SIZE and NODE_RANK.
_SLURM_RANKS = {"RANK": "SLURM_PROCID", "LOCAL_RANK": "SLURM_LOCALID", "WORLD_SIZE": "SLURM_NTASKS",
                "NODE_RANK": "SLURM_NODEID"}


def export_slurm_ranks(environ: dict[str, str] | None = None) -> bool:
    """Under ``srun`` with several tasks, set torchrun's rank variables from SLURM's (unless already set).

    Lightning reads SLURM's own variables, but the code that runs before the trainer exists (the rank-0-only
    truncation of ``metrics.csv``, the completion marker) and vLLM's ``external_launcher`` read ``RANK`` /
    ``LOCAL_RANK`` / ``WORLD_SIZE``, which srun does not set: every task would act as rank 0. One task (a sweep job
    on SLURM, or ``python`` inside ``sbatch`` without ``srun``) is left alone. Returns whether it set them.

    >>> env = {"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NODEID": "0"}
    >>> export_slurm_ranks(env), env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["NODE_RANK"]
    (True, '1', '1', '2', '0')
    >>> export_slurm_ranks({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"})
    False
    """
    env = os.environ if environ is None else environ
    if int(env.get("SLURM_NTASKS", "1")) < 2 or "SLURM_PROCID" not in env or "RANK" in env:
        return False
    if env.get("SLURM_JOB_NAME") in ("bash", "interactive"):  # Lightning's opt-out of SLURM: processes not srun's
        return False
    for torch_name, slurm_name in _SLURM_RANKS.items():
        if slurm_name in env:
            env[torch_name] = env[slurm_name]
    return True


def _is_rank_zero() -> bool:
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _max_steps(cfg: DictConfig) -> int | None:
    return (cfg.get("trainer") or {}).get("max_steps")


def finished_objective(cfg: DictConfig, out: Path) -> float | None:
    """The objective a finished run recorded in ``<out>/done.json`` when ``resume=auto`` (a re-run of a finished
    command has nothing to redo), else None: the run trains. A finished run asked to go further (a larger
    ``trainer.max_steps``) is not skipped: it continues from its newest checkpoint. Any other change of settings
    was refused before (:func:`check_resumed_settings`). A run that trains drops the old marker first, so a marker
    always belongs to the training that wrote the metrics beside it."""
    marker = out / DONE
    if str(cfg.get("resume")) == "auto" and marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("max_steps") == _max_steps(cfg):
            log.info("%s finished before (%s = %s): nothing to redo", out, done["objective"], done["value"])
            return float(done["value"])
        log.info("%s finished %s steps before, trainer.max_steps is now %s: it continues", out,
                 done.get("max_steps"), _max_steps(cfg))
    if _is_rank_zero():
        marker.unlink(missing_ok=True)
    return None


# Where and how a job runs, not what it trains: free to differ when a run directory is resumed (another machine,
# another GPU slot, a longer run). Keys named ``*path`` or ``*dir`` (data files, model folders, caches) too.
_RUN_PLACE_KEYS = {"threads", "resume", "sweep_gpus", "jobs_per_gpu", "output_dir", "reward.workers",
                   "trainer.max_steps", "trainer.enable_progress_bar", "trainer.accelerator", "trainer.devices",
                   "trainer.num_nodes",
                   # kernels and pass sizes: the same math, computed faster (a newer default may differ)
                   "rollout.attn_implementation", "rollout.preallocate_cache", "rollout.max_batch",
                   "batch.micro_batch_size", "batch.max_tokens_per_micro_batch", "batch.logprob_chunk_tokens"}


def _flat(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def changed_settings(before: DictConfig, now: DictConfig) -> dict[str, tuple[object, object]]:
    """The training settings that differ between a run directory's recorded config and this command's:
    ``{key: (before, now)}``, leaving out where and how the job runs (threads, GPU slots, paths, the step count).

    >>> from omegaconf import OmegaConf
    >>> a = OmegaConf.create({"seed": 1, "threads": 2, "clip": {"eps_high": 0.28}, "model": {"cache_dir": "/a"}})
    >>> changed_settings(a, OmegaConf.merge(a, {"threads": 8, "model": {"cache_dir": "/b"}}))
    {}
    >>> changed_settings(a, OmegaConf.merge(a, {"clip": {"eps_high": 0.2}, "batch": {"group_size": 8}}))
    {'clip.eps_high': (0.28, 0.2)}

    A key the recorded config lacks (``batch.group_size`` above) is an option added by a newer dapo-lab, at its
    default; one it has that this command lacks is a change.
    """
    old = _flat(OmegaConf.to_container(before, resolve=True))
    new = _flat(OmegaConf.to_container(now, resolve=True))
    return {key: (old[key], new.get(key, "<absent>")) for key in sorted(old)
            if old[key] != new.get(key, "<absent>") and key not in _RUN_PLACE_KEYS
            and not key.rsplit(".", 1)[-1].endswith(("path", "dir"))}


def check_resumed_settings(cfg: DictConfig, out: Path) -> None:
    """With ``resume=auto``, refuse to continue (or to skip as finished) a run directory whose recorded
    ``resolved_config.yaml`` trained other settings: a re-run sweep with an edited sweep file, or a scale changed
    under the same sweep folder, would otherwise silently mix two experiments in one run. Raises ``ValueError``
    naming every changed key."""
    recorded = out / "resolved_config.yaml"
    if str(cfg.get("resume")) != "auto" or not recorded.is_file():
        return
    changed = changed_settings(OmegaConf.load(recorded), cfg)
    if changed:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
        raise ValueError(f"resume=auto: {out} holds a run trained with other settings ({listed}). Use a new "
                         f"output or sweep directory, or resume=null to start this one over.")


def finish(cfg: DictConfig, out: Path, final: dict[str, float], write: bool = True) -> float:
    """Write ``<out>/done.json`` (the objective, every final eval metric and the step count; temporary name, fsync,
    rename, so it exists only complete) and return the objective, the value a sweeper optimises."""
    name = cfg.get("objective", "eval/greedy_acc")
    value = final.get(name, math.nan)
    if write:
        record = {"objective": name, "value": value, "final": final, "max_steps": _max_steps(cfg)}
        tmp = out / f".tmp-{DONE}"
        with open(tmp, "w") as handle:
            json.dump(record, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out / DONE)
    return value
