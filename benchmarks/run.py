"""The benchmark runner: does edgeopt beat doing it by hand, and beat naive search?

One command regenerates the ``runner`` section of ``benchmarks/RESULTS.md``:

    python benchmarks/run.py            # full: about an hour on a 2-core VM
    python benchmarks/run.py --quick    # a few minutes, same sections, small budgets

Sections (residual and depthwise example models, this host, target ``cpu`` = measured):
1. quality of the front under a fixed time budget: best measured host speedup at <= 1 and
   <= 3 points test-accuracy loss, size reduction at <= 1 point;
2. by-hand baselines measured in the same interleaved run: ORT ``quantize_dynamic``,
   ``quantize_static`` with its defaults, and the best single int8 setting;
3. search efficiency: hypervolume after equal trial counts, default sampler vs random, over
   seeds (target ``mobile``, estimated, so timing noise does not enter the comparison);
4. overhead: per-trial time by stage, the non-training part, what the stage cache saved;
5. repeatability: one speedup ratio measured repeatedly over the whole run, its CV;
6. scale: wall time vs trials and with ``--workers 2``.

Every latency in the tables is a ratio measured interleaved against the fp32 original in one
isolated process (median over rounds of per-round ratios). Nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from results_md import write_section

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- runner:start -->", "<!-- runner:end -->"
DATA = ROOT / "models" / "digits.npz"


@dataclass
class Settings:
    models: list[str]
    budget_s: float
    search_trials: int | None
    hv_model: str
    hv_trials: int
    hv_seeds: int
    scale_trials: tuple[int, int]
    quick: bool
    hv_data: Path | None = None


@dataclass
class Repeat:
    """The same speedup ratio, measured at several points of the run."""

    fp32: Path | None = None
    best: Path | None = None
    input_shape: tuple[int, ...] = ()
    ratios: list[float] = field(default_factory=list)
    times: list[str] = field(default_factory=list)

    def tick(self) -> None:
        if self.fp32 is None or self.best is None:
            return
        from edgeopt.measure.local_runner import measure_latency

        _, best = measure_latency(
            [self.fp32, self.best],
            threads=1,
            input_shape=self.input_shape,
            min_rounds=10,
            time_budget_s=10.0,
        )
        self.ratios.append(1.0 / best.ratio_to_first)
        self.times.append(dt.datetime.now().strftime("%H:%M:%S"))


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


# ------------------------------------------------------------------------------------ search
def run_search(
    model: str,
    out: Path,
    *,
    target: str,
    trials: int | None,
    timeout_s: float | None,
    sampler: str = "tpe",
    seed: int = 0,
    workers: int = 1,
    plain: bool = False,
    data: Path | None = None,
) -> tuple[dict[str, Any], float]:
    """A fresh edgeopt run through the library; returns its records and wall time."""
    from edgeopt.config import RunConfig
    from edgeopt.loading import ModelSpec
    from edgeopt.search.run import loop
    from edgeopt.search.run.collect import load_run
    from edgeopt.search.run.setup import finalize, prepare

    shutil.rmtree(out, ignore_errors=True)
    path = Path(model) if model.endswith(".pt") else ROOT / "models" / f"{model}.pt"
    config = RunConfig(
        model=ModelSpec(path=str(path)),
        targets=(target,),
        data=str(data or DATA),
        sampler=sampler,
        seed=seed,
        plain_search=plain,
    )
    t0 = time.monotonic()
    prepare(config, out)
    loop.run_search(out, n_trials=trials, timeout_s=timeout_s, workers=workers)
    finalize(out)
    wall = time.monotonic() - t0
    return load_run(out), wall


# ------------------------------------------------------------------------------------ by hand
def by_hand_variants(run: dict[str, Any], out: Path) -> dict[str, Path]:
    """What an engineer does by hand with ORT on the fp32 export: dynamic quantization,
    ``quantize_static`` with its defaults, and a small grid of int8 settings (u8/s8 as the
    ORT docstring recommends for x86)."""
    from edgeopt.data import load_npz
    from edgeopt.profiles import load_profile
    from edgeopt.stages import STAGES, QuantizeConfig, StageContext
    from edgeopt.stages.quantize_config import CalibMethod, QuantMode

    fp32 = Path(run["run_dir"]) / "baseline" / "model.onnx"
    profile = load_profile("cpu")
    ctx = StageContext(
        workdir=out,
        profile=profile,
        data=load_npz(DATA),
        teacher=None,
        input_shape=tuple(run["baseline"]["input_shape"]),
    )
    base = STAGES["quantize"].identity(profile)
    configs: dict[str, QuantizeConfig] = {
        "ORT quantize_dynamic": QuantizeConfig(
            mode=QuantMode.INT8_DYNAMIC,
            per_channel=False,
            activation_type=base.activation_type,
            weight_type=base.weight_type,
        ),
        "ORT quantize_static defaults": QuantizeConfig(
            mode=QuantMode.ORT_DEFAULT,
            per_channel=False,
            activation_type=base.activation_type,
            weight_type=base.weight_type,
        ),
    }
    for calib, per_channel in itertools.product(CalibMethod, (True, False)):
        configs[f"int8 u8s8 {calib.value}{' per-channel' if per_channel else ''}"] = QuantizeConfig(
            mode=QuantMode.INT8_STATIC,
            calibration=calib,
            calibration_samples=128,
            per_channel=per_channel,
            activation_type=base.activation_type,
            weight_type=base.weight_type,
        )
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, cfg in configs.items():
        sub = out / name.replace(" ", "_")
        sub.mkdir(exist_ok=True)
        try:
            paths[name] = (
                STAGES["quantize"]
                .apply(fp32, cfg, StageContext(**{**ctx.__dict__, "workdir": sub}))
                .artifact
            )
        except Exception as exc:  # a by-hand setting that fails is reported, not fatal
            log(f"  by-hand {name} failed: {exc}")
    return paths


@dataclass
class Point:
    name: str
    kind: str  # "original", "by-hand", "edgeopt"
    path: Path
    test_accuracy: float
    size_mb: float
    speedup: float = float("nan")
    ratio_cv: float = float("nan")


def quality(model: str, run: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Sections 1 and 2 for one model: every front member and every by-hand variant,
    measured interleaved against the fp32 original in one process."""
    from edgeopt.data import load_npz
    from edgeopt.measure.accuracy import onnx_accuracy
    from edgeopt.measure.local_runner import measure_latency
    from edgeopt.measure.runtime import size_mb

    data = load_npz(DATA)
    x, y = data.split("test")
    run_dir = Path(run["run_dir"])
    fp32 = run_dir / "baseline" / "model.onnx"
    points = [Point("fp32 original", "original", fp32, onnx_accuracy(fp32, x, y), size_mb(fp32))]
    for name, path in by_hand_variants(run, WORK / f"{model}-byhand").items():
        points.append(Point(name, "by-hand", path, onnx_accuracy(path, x, y), size_mb(path)))
    for t in run["trials"]:
        if t.get("on_front") and t.get("test_accuracy") is not None:
            p = run_dir / t["onnx"]
            points.append(
                Point(
                    f"trial {t['number']}: {t['describe']}",
                    "edgeopt",
                    p,
                    float(t["test_accuracy"]),
                    size_mb(p),
                )
            )
    stats = measure_latency(
        [p.path for p in points],
        threads=1,
        input_shape=tuple(run["baseline"]["input_shape"]),
        sample=data.x_val[:1],
        min_rounds=8,
        time_budget_s=30.0 if not settings.quick else 10.0,
    )
    for p, s in zip(points, stats, strict=True):
        p.speedup = 1.0 / s.ratio_to_first
        p.ratio_cv = s.ratio_cv
    base_acc = points[0].test_accuracy

    def best(kind: str, max_drop: float, key: str = "speedup") -> Point | None:
        ok = [p for p in points if p.kind == kind and p.test_accuracy >= base_acc - max_drop - 1e-9]
        if not ok:
            return None
        if key == "size":
            return min(ok, key=lambda p: p.size_mb)
        return max(ok, key=lambda p: p.speedup)

    int8_hand = [p for p in points if p.kind == "by-hand" and p.name.startswith("int8")]
    ok_int8 = [p for p in int8_hand if p.test_accuracy >= base_acc - 0.01 - 1e-9]
    best_int8 = max(ok_int8 or int8_hand, key=lambda p: p.speedup) if int8_hand else None
    e1, e3 = best("edgeopt", 0.01), best("edgeopt", 0.03)
    s1 = best("edgeopt", 0.01, key="size")
    return {
        "model": model,
        "points": points,
        "base_acc": base_acc,
        "edgeopt_1pt": e1,
        "edgeopt_3pt": e3,
        "size_1pt": s1,
        "best_int8": best_int8,
        "fp32": fp32,
    }


# ------------------------------------------------------------------------------------ HV
def hypervolume(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Exact hypervolume (minimization) of a small point set, by summing grid cells."""
    pts = [p for p in points if all(a < r for a, r in zip(p, ref, strict=True))]
    if not pts:
        return 0.0
    dims = len(ref)
    axes = [sorted({p[d] for p in pts} | {ref[d]}) for d in range(dims)]
    total = 0.0
    for idx in itertools.product(*(range(len(a) - 1) for a in axes)):
        lo = [axes[d][i] for d, i in enumerate(idx)]
        if any(all(p[d] <= lo[d] for d in range(dims)) for p in pts):
            vol = 1.0
            for d, i in enumerate(idx):
                vol *= axes[d][i + 1] - axes[d][i]
            total += vol
    return total


HV_REF = (0.5, 1.5, 1.5)  # (1 - accuracy, latency / original, size / original)


def normalized(run: dict[str, Any]) -> list[tuple[float, ...]]:
    """Complete trials as (1 - val accuracy, latency ratio, size ratio) vs the original."""
    target = run["targets"][0]
    trials = [t for t in run["trials"] if t["state"] == "complete"]
    base = next(t for t in trials if t.get("baseline") == "unchanged")
    lat0 = base["measurements"][target]["latency_ms"]["value"]
    size0 = base["size_mb"]
    return [
        (
            1.0 - t["val_accuracy"],
            t["measurements"][target]["latency_ms"]["value"] / lat0,
            t["size_mb"] / size0,
        )
        for t in trials
    ]


# ------------------------------------------------------------------------------------ report
def fmt_point(p: Point | None, base_acc: float) -> str:
    if p is None:
        return "none within the accuracy bound"
    drop = (base_acc - p.test_accuracy) * 100
    return f"{p.speedup:.2f}x ({p.name}; test acc {p.test_accuracy:.4f}, {drop:+.2f} pt loss)"


def render(
    settings: Settings,
    command: str,
    seconds: float,
    host: str,
    quality_rows: list[dict[str, Any]],
    hv: HV,
    overhead: dict[str, dict[str, float]],
    repeat: Repeat,
    scale: list[tuple[str, int, int, float]],
) -> str:
    lines = [
        START,
        "## edgeopt vs by hand vs naive search (benchmarks/run.py)",
        "",
        f"- date: {dt.date.today().isoformat()}; command: `{command}`; "
        f"runtime {seconds / 60:.1f} min",
        f"- machine: {host}; 1 intra-op thread; ORT CPU; batch 1",
        "- search budget per model: "
        + (
            f"{settings.search_trials} trials"
            if settings.search_trials
            else f"{settings.budget_s / 60:.0f} min"
        )
        + " (target `cpu`, measured)",
        "- speedups are interleaved ratios against the fp32 original measured in ONE process "
        "for all rows of a model (median of per-round ratios); accuracy is on the test split, "
        "never seen by the search.",
        "",
        "### 1-2. Quality of the front and by-hand baselines",
        "",
    ]
    for q in quality_rows:
        lines += [
            f"**{q['model']}** (fp32 test accuracy {q['base_acc']:.4f})",
            "",
            f"- best speedup at <= 1 pt loss: {fmt_point(q['edgeopt_1pt'], q['base_acc'])}",
            f"- best speedup at <= 3 pt loss: {fmt_point(q['edgeopt_3pt'], q['base_acc'])}",
        ]
        s1 = q["size_1pt"]
        if s1 is not None:
            fp = q["points"][0]
            lines.append(
                f"- size reduction at <= 1 pt loss: {fp.size_mb / s1.size_mb:.2f}x "
                f"({fp.size_mb:.3f} MB -> {s1.size_mb:.3f} MB, {s1.name})"
            )
        e1 = q["edgeopt_1pt"]
        hand = [p for p in q["points"] if p.kind == "by-hand"]
        hand_eq = [p for p in hand if e1 is not None and p.test_accuracy >= e1.test_accuracy - 1e-9]
        if e1 is not None:
            beaten = all(e1.speedup > p.speedup for p in hand)
            lines.append(
                f"- edgeopt's <= 1 pt point faster than all {len(hand)} by-hand variants: "
                f"**{'yes' if beaten else 'no'}** ({len(hand_eq)} of them are at least as "
                "accurate on the test split)"
            )
        lines += [
            "",
            "| variant | kind | test acc | speedup vs fp32 | ratio CV | size MB |",
            "|---|---|---|---|---|---|",
        ]
        for p in q["points"]:
            lines.append(
                f"| {p.name} | {p.kind} | {p.test_accuracy:.4f} | {p.speedup:.2f}x | "
                f"{p.ratio_cv:.1%} | {p.size_mb:.3f} |"
            )
        lines.append("")
    lines += render_hv(settings, hv)
    lines += ["", "### 4. Overhead per trial (seconds, median over complete trials)", ""]
    lines.append(
        "| model | trials | " + " | ".join(next(iter(overhead.values()), {}).keys()) + " |"
    )
    keys = list(next(iter(overhead.values()), {}).keys())
    lines.append("|---|---|" + "---|" * len(keys))
    for model, row in overhead.items():
        lines.append(
            f"| {model} | "
            + " | ".join(
                f"{row[k]:.2f}" if isinstance(row[k], float) else str(row[k]) for k in ["n", *keys]
            )
            + " |"
        )
    lines += ["", "### 5. Repeatability", ""]
    if repeat.ratios:
        cv = (
            statistics.stdev(repeat.ratios) / statistics.fmean(repeat.ratios)
            if len(repeat.ratios) > 1
            else 0.0
        )
        lines.append(
            f"speedup of `{repeat.best}` vs fp32, measured {len(repeat.ratios)} times at "
            f"{', '.join(repeat.times)}: {', '.join(f'{r:.3f}' for r in repeat.ratios)}; "
            f"CV **{cv:.1%}** (goal <= 5 %)"
        )
    lines += [
        "",
        "### 6. Scale",
        "",
        "| run | trials | workers | wall s | s per trial |",
        "|---|---|---|---|---|",
    ]
    for name, n, w, wall in scale:
        lines.append(f"| {name} | {n} | {w} | {wall:.0f} | {wall / n:.1f} |")
    lines += ["", END]
    return "\n".join(lines)


def overhead_of(run: dict[str, Any]) -> dict[str, float]:
    """Median seconds per complete trial by part, and the cache's savings."""
    trials = [t for t in run["trials"] if t["state"] == "complete"]
    parts: dict[str, list[float]] = {
        k: []
        for k in (
            "prune",
            "finetune",
            "export",
            "quantize",
            "evaluate",
            "measure",
            "total",
            "non-training",
        )
    }
    saved = 0.0
    hits = 0
    for t in trials:
        sec = t.get("info", {}).get("seconds", {})
        for k in ("prune", "finetune", "export", "quantize", "evaluate"):
            parts[k].append(float(sec.get(k, 0.0)))
        parts["measure"].append(float(t["timing"].get("measure_s", 0.0)))
        total = float(t["timing"].get("trial_s", 0.0))
        parts["total"].append(total)
        parts["non-training"].append(
            total - float(sec.get("finetune", 0.0)) - float(sec.get("prune", 0.0))
        )
        if t.get("cache_hit"):
            hits += 1
            saved += float(t.get("info", {}).get("cache_saved_s", 0.0))
    row: dict[str, Any] = {"n": len(trials)}
    for k, v in parts.items():
        row[k] = statistics.median(v) if v else 0.0
    row["cache hits"] = hits
    row["cache saved s"] = saved
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets (a few minutes)")
    parser.add_argument("--budget", default=None, help="search time per model, e.g. 12m")
    parser.add_argument("--models", default="resnet_small,mobilenet_small")
    parser.add_argument(
        "--hv-only", action="store_true", help="only section 3, into its own RESULTS.md section"
    )
    parser.add_argument(
        "--hv-model",
        default="resnet_small",
        help="with --hv-only: a bundled model's name or a .pt path (default resnet_small)",
    )
    parser.add_argument("--hv-data", default=None, help="with --hv-model PATH: its .npz data")
    parser.add_argument("--hv-seeds", type=int, default=3, help="with --hv-only (default 3)")
    args = parser.parse_args(argv)
    from edgeopt.config import parse_duration
    from edgeopt.measure.runtime import host_description

    if args.quick:
        settings = Settings(args.models.split(","), 0, 6, "resnet_small", 5, 1, (3, 6), True)
    else:
        budget = parse_duration(args.budget) if args.budget else 12 * 60
        settings = Settings(
            args.models.split(","),
            budget,
            None,
            args.hv_model,
            12,
            args.hv_seeds,
            (4, 8),
            False,
            Path(args.hv_data) if args.hv_data else None,
        )
    args_text = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    command = f"python benchmarks/run.py {args_text}".strip()
    t_start = time.monotonic()
    if args.hv_only:
        WORK.mkdir(parents=True, exist_ok=True)
        hv = hv_runs(settings)
        lines = render_hv(settings, hv)
        lines[0] = "## Search efficiency: edgeopt vs random search (benchmarks/run.py --hv-only)"
        minutes = (time.monotonic() - t_start) / 60
        lines[1:1] = [
            "",
            f"- date: {dt.date.today().isoformat()}; command: `{command}`; runtime "
            f"{minutes:.1f} min",
            f"- machine: {host_description()}",
        ]
        # the bundled model keeps its section; another model gets one of its own
        marks = (HV_START, HV_END)
        if settings.hv_model != "resnet_small":
            tag = f"runner-hv:{Path(settings.hv_model).stem}"
            marks = (f"<!-- {tag}:start -->", f"<!-- {tag}:end -->")
        write_section(*marks, "\n".join(lines))
        print("\n".join(lines))
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    repeat = Repeat()
    quality_rows = []
    overhead: dict[str, dict[str, float]] = {}
    for model in settings.models:
        log(f"search {model}")
        run, wall = run_search(
            model,
            WORK / f"{model}-search",
            target="cpu",
            trials=settings.search_trials,
            timeout_s=None if settings.search_trials else settings.budget_s,
        )
        log(f"  {len(run['trials'])} trials in {wall:.0f}s; measuring front and by-hand variants")
        q = quality(model, run, settings)
        quality_rows.append(q)
        overhead[model] = overhead_of(run)
        if repeat.best is None and q["edgeopt_1pt"] is not None:
            repeat.fp32, repeat.best = q["fp32"], q["edgeopt_1pt"].path
            repeat.input_shape = tuple(run["baseline"]["input_shape"])
        repeat.tick()
    hv = hv_runs(settings, repeat.tick)
    scale = []
    n1, n2 = settings.scale_trials
    for name, n, w in (("1 worker", n1, 1), ("1 worker", n2, 1), ("2 workers", n2, 2)):
        log(f"scale: {n} trials, {w} worker(s)")
        _, wall = run_search(
            settings.hv_model,
            WORK / f"scale-{n}-{w}",
            target="cpu",
            trials=n,
            timeout_s=None,
            workers=w,
        )
        scale.append((name, n, w, wall))
        repeat.tick()
    while len(repeat.ratios) < 5 and repeat.best is not None:
        time.sleep(5)
        repeat.tick()
    text = render(
        settings,
        command,
        time.monotonic() - t_start,
        host_description(),
        quality_rows,
        hv,
        overhead,
        repeat,
        scale,
    )
    write_section(START, END, _body(text))
    log(f"wrote {RESULTS.relative_to(ROOT)} in {(time.monotonic() - t_start) / 60:.1f} min")
    return 0


HV_LABELS = {
    "tpe": "edgeopt default (TPE + expert seeds, siblings, promotion, stopping rule)",
    "random": "random search (--sampler random --plain-search)",
}
HV_START, HV_END = "<!-- runner-hv:start -->", "<!-- runner-hv:end -->"


@dataclass
class HV:
    """Hypervolume per search and seed, and the union of every run's points (the best front
    known: no search of the same model and space can be shown to do much better)."""

    values: dict[str, list[float]]
    union: float = 0.0


def hv_runs(settings: Settings, tick: Any = None) -> HV:
    """Hypervolume after ``hv_trials`` trials, per seed: edgeopt's default search against a
    naive random search (the sampler alone, none of edgeopt's enqueued trials)."""
    hv = HV({"tpe": [], "random": []})
    points: list[tuple[float, ...]] = []
    for seed in range(settings.hv_seeds):
        for sampler in ("tpe", "random"):
            log(f"hypervolume: {sampler} seed {seed}")
            run, _ = run_search(
                settings.hv_model,
                WORK / f"hv-{Path(settings.hv_model).stem}-{sampler}-{seed}",
                target="mobile",
                trials=settings.hv_trials,
                timeout_s=None,
                sampler=sampler,
                seed=seed,
                plain=sampler == "random",
                data=settings.hv_data,
            )
            run_points = normalized(run)
            points += run_points
            hv.values[sampler].append(hypervolume(run_points, HV_REF))
        if tick is not None:
            tick()
    hv.union = hypervolume(points, HV_REF)
    return hv


def render_hv(settings: Settings, result: HV) -> list[str]:
    """Section 3's lines."""
    hv = result.values
    lines = ["### 3. Search efficiency (hypervolume, higher is better)", ""]
    ref = ", ".join(f"{r:g}" for r in HV_REF)
    lines.append(
        f"{Path(settings.hv_model).stem}, target `mobile` (estimated), "
        f"{settings.hv_trials} trials per run, "
        f"objectives normalized as (1 - val acc, latency/original, size/original), "
        f"reference point ({ref})."
    )
    lines.append("")
    lines.append(
        "| search | " + " | ".join(f"seed {i}" for i in range(settings.hv_seeds)) + " | mean |"
    )
    lines.append("|---|" + "---|" * (settings.hv_seeds + 1))
    for name, values in hv.items():
        lines.append(
            f"| {HV_LABELS[name]} | "
            + " | ".join(f"{v:.4f}" for v in values)
            + f" | {statistics.fmean(values):.4f} |"
        )
    if hv.get("random") and statistics.fmean(hv["random"]) > 0:
        ratio = statistics.fmean(hv["tpe"]) / statistics.fmean(hv["random"])
        worst = min(t / r for t, r in zip(hv["tpe"], hv["random"], strict=True) if r > 0)
        lines += [
            "",
            f"edgeopt default / random search: **{ratio:.2f}x** on the mean, {worst:.2f}x in "
            "the worst seed (goal >= 1.2x)",
        ]
        if result.union > 0:
            share = ", ".join(
                f"{HV_LABELS[name].split(' (')[0]} {statistics.fmean(v) / result.union:.0%}"
                for name, v in hv.items()
            )
            lines += [
                "",
                f"Ceiling: the union of all {2 * settings.hv_seeds} runs' points has "
                f"hypervolume {result.union:.4f}; on the mean each search reaches {share} of "
                f"it, so no search of this space can beat random search here by more than "
                f"**{result.union / statistics.fmean(hv['random']):.2f}x** (a bound from the "
                "best front known, not a proof).",
            ]
    return lines


def _body(text: str) -> str:
    """The section without its markers (the renderer includes them)."""
    return text.split(START, 1)[1].rsplit(END, 1)[0]


if __name__ == "__main__":
    sys.exit(main())
