"""Compare the training runs of ``experiments/gpu_check.sh`` and write its ``summary.json`` (runs on CPU too).

For each ``train.py`` run directory: per step ``actor/num_updates``, ``actor/grad_norm``, ``advantage/zero_frac`` and
``time/step``, the evaluations (``csv/metrics.csv``), and the peak CUDA memory that the script's wrapper wrote to
``peak.json``. For each pair ``A:B``, the final policies (``policy/``, gathered from shards by ``run.py``) tensor by
tensor, and their gap measured against how far training moved B from the starting weights θ0 (the warm start):

    gap/movement = ||θ_A − θ_B|| / ||θ_B − θ0||        (norms over every tensor together)

Two fp32 runs of one config under different strategies differ by rounding only, well under ``--tolerance`` (FSDP2
against strategy=auto on one CPU process, debug=tiny, 2 steps: 1.3e-5). One sampled token that flips between them
moves one response of the batch and the ratio to ~1e-2 and up; ``metric_divergence`` then names the first step whose
``rollout/*`` metrics differ. nan (null in the JSON): B did not move at all (every advantage zero), which
``actor/num_updates`` > 0 alone does not rule out.

    python experiments/gpu_check_compare.py --run fsdp32=RUN_DIR --run auto32=RUN_DIR --pair fsdp32:auto32 \\
        --initial $DAPO_CACHE/tiny-KEY --out summary.json
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata as md
import json
import math
import platform
from pathlib import Path
from typing import Any

PACKAGES = ["torch", "lightning", "transformers", "tokenizers", "safetensors", "hydra-core", "omegaconf",
            "math-verify", "numpy", "pytest", "deepspeed", "vllm"]
SKIP_PREFIXES = ("time/", "perf/")  # wall-clock metrics differ between any two runs


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_metrics(run_dir: Path) -> tuple[dict[int, dict[str, float]], dict[int, dict[str, float]]]:
    """Training rows and evaluation rows of ``csv/metrics.csv``, by step."""
    train: dict[int, dict[str, float]] = {}
    evals: dict[int, dict[str, float]] = {}
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return train, evals
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            values = {k: v for k, v in ((k, _number(v)) for k, v in row.items() if v not in ("", None))
                      if v is not None}
            step = int(values.pop("step", -1))
            scores = {k: v for k, v in values.items() if k.startswith("eval/")}
            if scores:
                evals.setdefault(step, {}).update(scores)
            if "actor/num_updates" in values:
                train.setdefault(step, {}).update({k: v for k, v in values.items() if k not in scores})
    return train, evals


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def run_record(run_dir: Path) -> dict[str, Any]:
    train, evals = read_metrics(run_dir)
    steps = sorted(train)
    series = {name: [train[s].get(key) for s in steps] for name, key in [
        ("num_updates", "actor/num_updates"), ("skipped_updates", "actor/skipped_updates"),
        ("grad_norm", "actor/grad_norm"),
        ("advantage_zero_frac", "advantage/zero_frac"), ("rollout_acc", "rollout/acc"), ("time_step", "time/step"),
        ("time_generate", "time/generate"), ("time_update", "time/update")]}
    times = [t for t in series["time_step"] if t is not None]
    record: dict[str, Any] = {"dir": str(run_dir), "steps": steps, **series,
                              "time_step_mean": _mean(times), "time_step_mean_after_first": _mean(times[1:]),
                              "eval": {str(s): evals[s] for s in sorted(evals)},
                              "policy_saved": (run_dir / "policy" / "config.json").is_file()}
    peak = run_dir / "peak.json"
    if peak.is_file():
        record.update(json.loads(peak.read_text()))
    config = run_dir / "resolved_config.yaml"
    if config.is_file():
        import yaml

        trainer = yaml.safe_load(config.read_text()).get("trainer", {})
        record["trainer"] = {k: trainer.get(k) for k in ("accelerator", "devices", "precision", "max_steps",
                                                          "strategy")}
    return record


def load_weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    weights: dict[str, Any] = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(str(file)))
    return weights


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def compare_policies(a: Path, b: Path, initial: Path | None) -> dict[str, Any]:
    """Tensor-by-tensor gap between two ``save_pretrained`` folders, and each one's movement from ``initial``."""
    wa, wb = load_weights(a), load_weights(b)
    w0 = load_weights(initial) if initial else {}
    names = sorted(set(wa) & set(wb))
    result: dict[str, Any] = {"tensors": len(names), "only_in_a": sorted(set(wa) - set(wb))[:5],
                              "only_in_b": sorted(set(wb) - set(wa))[:5]}
    if not names:
        return result
    gap_sq = move_a_sq = move_b_sq = 0.0
    max_abs, per_tensor, moved, shape_mismatch = [], [], 0, []
    for name in names:
        ta, tb = wa[name].double(), wb[name].double()
        if ta.shape != tb.shape:
            shape_mismatch.append(name)
            continue
        diff = ta - tb
        max_abs.append((float(diff.abs().max()) if diff.numel() else 0.0, name))
        gap = float(diff.norm())
        gap_sq += gap**2
        if name in w0 and w0[name].shape == tb.shape:
            t0 = w0[name].double()
            move_b = float((tb - t0).norm())
            move_a_sq += float((ta - t0).norm()) ** 2
            move_b_sq += move_b**2
            moved += move_b > 0
            if move_b > 0:
                per_tensor.append((gap / move_b, name))
    max_abs.sort(reverse=True)
    per_tensor.sort(reverse=True)
    result.update({
        "shape_mismatch": shape_mismatch[:5],
        "max_abs_diff": max_abs[0][0] if max_abs else None,
        "worst_max_abs_diff": [[name, value] for value, name in max_abs[:3]],
        "gap_norm": math.sqrt(gap_sq),
    })
    if w0:
        result.update({
            "movement_a": math.sqrt(move_a_sq), "movement_b": math.sqrt(move_b_sq),
            "gap_over_movement": _ratio(math.sqrt(gap_sq), math.sqrt(move_b_sq)),
            "worst_tensor_gap_over_movement": [[name, value] for value, name in per_tensor[:3]],
            "tensors_moved_in_b": f"{moved}/{len(names)}",
        })
    return result


def metric_divergence(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]],
                      rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> dict[str, Any]:
    """The first step whose logged metrics (wall-clock ones aside) differ between two runs beyond rounding, and the
    largest gaps: rollout/* there means the runs sampled different tokens."""
    for step in sorted(set(a) & set(b)):
        gaps = []
        for key in sorted(set(a[step]) & set(b[step])):
            if key.startswith(SKIP_PREFIXES):
                continue
            x, y = a[step][key], b[step][key]
            scale = max(abs(x), abs(y), 1e-8)
            if abs(x - y) > rel_tol * scale + abs_tol:
                gaps.append((abs(x - y) / scale, key, x, y))
        if gaps:
            gaps.sort(reverse=True)
            return {"first_step": step, "metrics": len(gaps),
                    "largest": [{"metric": k, "a": x, "b": y} for _, k, x, y in gaps[:4]]}
    return {"first_step": None}


def versions() -> dict[str, Any]:
    found: dict[str, Any] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = None
    try:
        import torch

        found["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            found["gpu"] = torch.cuda.get_device_name(0)
            found["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
            found["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    except Exception as err:  # the summary must still be written when torch is broken
        found["torch_error"] = repr(err)
    return found


def read_steps(path: Path | None) -> list[dict[str, Any]]:
    """The step lines gpu_check.sh recorded: name, output file, exit code, seconds, limit (tab-separated)."""
    if not path or not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        name, file, rc, seconds, limit = (line.split("\t") + [""] * 5)[:5]
        rows.append({"name": name, "file": file, "rc": rc if rc == "skipped" else int(rc),
                     "seconds": int(seconds), "limit": int(limit)})
    return rows


def _pair_name(spec: str) -> tuple[str, str]:
    a, _, b = spec.partition(":")
    return a, b


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def finite(value: Any) -> Any:
    """NaN and infinities as null: summary.json stays strict JSON (a nan ratio means nothing moved)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", default=[], metavar="NAME=DIR", help="a train.py run directory")
    parser.add_argument("--pair", action="append", default=[], metavar="A:B",
                        help="compare A's policy with B's; a check: they must agree within --tolerance")
    parser.add_argument("--report-pair", action="append", default=[], metavar="A:B",
                        help="compare A's policy with B's, no check (e.g. bf16 against fp32)")
    parser.add_argument("--initial", type=Path, help="the starting weights (the warm-start folder)")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest gap/movement counted as agreement")
    parser.add_argument("--steps", type=Path, help="gpu_check.sh's step table (tab-separated)")
    parser.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="recorded as is (JSON "
                        "values are parsed)")
    parser.add_argument("--out", type=Path, help="where summary.json goes (default: print it)")
    args = parser.parse_args()

    runs = {}
    for spec in args.run:
        name, _, folder = spec.partition("=")
        runs[name] = Path(folder)
    meta: dict[str, Any] = {}
    for spec in args.meta:
        key, _, value = spec.partition("=")
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    summary: dict[str, Any] = {"meta": meta, "versions": versions(), "steps": read_steps(args.steps)}
    if args.initial and (args.initial / "warmstart.json").is_file():
        record = json.loads((args.initial / "warmstart.json").read_text())
        summary["warm_start"] = {"dir": str(args.initial),
                                 "warmstart_steps": record.get("model", {}).get("warmstart_steps"),
                                 **{k: v for k, v in record.get("metrics", {}).items() if k != "warmstart/losses"}}

    checks: dict[str, bool] = {}
    summary["runs"] = {}
    print("== runs: exit, peak CUDA MiB (allocated/reserved), time/step mean (after the first), num_updates, "
          "grad_norm, advantage zero fraction")
    for name, folder in runs.items():
        record = summary["runs"][name] = run_record(folder)
        updates = [u for u in record["num_updates"] if u is not None]
        max_steps = record.get("trainer", {}).get("max_steps")
        checks[f"{name}: exit 0, every step logged"] = record.get("exit") == 0 and len(record["steps"]) == max_steps
        checks[f"{name}: updates every step"] = bool(updates) and len(updates) == len(record["steps"]) and min(
            updates) > 0
        print(f"{name}: exit {record.get('exit')}, peak {fmt(record.get('max_allocated_mib'))}/"
              f"{fmt(record.get('max_reserved_mib'))} MiB, time/step {fmt(record['time_step_mean'])} "
              f"({fmt(record['time_step_mean_after_first'])}) s, updates {record['num_updates']}, "
              f"grad_norm {[fmt(g) for g in record['grad_norm']]}, zero adv {record['advantage_zero_frac']}, "
              f"wall {record.get('wall_s')} s")
        for step, values in record["eval"].items():
            shown = {k.removeprefix("eval/"): round(v, 4) for k, v in values.items() if "acc" in k or "avg" in k}
            print(f"   eval step {step}: {shown}")

    summary["pairs"] = {}
    for spec in [*args.pair, *args.report_pair]:
        a, b = _pair_name(spec)
        if a not in runs or b not in runs:
            continue
        entry: dict[str, Any] = {}
        pa, pb = runs[a] / "policy", runs[b] / "policy"
        if (pa / "config.json").is_file() and (pb / "config.json").is_file():
            try:
                entry = compare_policies(pa, pb, args.initial)
            except Exception as err:  # one broken pair must not lose the rest of the summary
                entry = {"error": repr(err)}
        else:
            entry["error"] = "no policy/ in " + ", ".join(str(p) for p in (pa, pb) if not (p / "config.json").is_file())
        entry["metric_divergence"] = metric_divergence(read_metrics(runs[a])[0], read_metrics(runs[b])[0])
        ratio = entry.get("gap_over_movement")
        if ratio is not None:
            entry["agree"] = bool(ratio <= args.tolerance)  # nan (nothing moved) is not agreement
            checks[f"{a}: weights moved"] = bool(entry["movement_a"] > 0)
            checks[f"{b}: weights moved"] = bool(entry["movement_b"] > 0)
        if spec in args.pair:
            checks[f"{a} equals {b} (gap/movement <= {args.tolerance:g})"] = bool(entry.get("agree"))
        summary["pairs"][spec] = entry
        print(f"== {a} vs {b}:\n" + json.dumps(entry, indent=1))

    summary["checks"] = checks
    print("== checks\n" + "\n".join(f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in checks.items()))
    text = json.dumps(finite(summary), indent=1, default=str, allow_nan=False)
    if args.out:
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
