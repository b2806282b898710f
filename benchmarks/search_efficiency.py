"""A search that earns its time (issue 26): edgeopt's default search against two baselines at
equal wall-clock, on the real ResNet-18-class and MobileNetV2-class models at width 0.5.

One model and one seed per invocation (about 35 minutes); each writes its JSON to
``benchmarks/work/efficiency/`` and regenerates the model's RESULTS.md section from every
seed measured so far.

1. three ``edgeopt optimize MODEL --data DATA --target cpu --timeout BUDGET --seed S`` runs
   (``real_models.run_search``), one after the other: edgeopt's default; (a) ``--sampler
   random --plain-search``; (b) ``--sampler tpe --plain-search`` (plain Optuna TPE: no expert
   seeds, siblings, promotions or stopping rule). Every run keeps the baselines (the original
   and plain int8), so all three start from the same two trials;
2. the by-hand recipes of ``real_models.build_by_hand`` (ORT static int8; Torch-Pruning 50 %
   + 2 epochs; both), built once per model;
3. test accuracy of every complete trial through ORT (1 thread), then ONE interleaved latency
   pass (1 ORT thread, batch 1) over the fp32 original, the by-hand models and every trial of
   the three searches within 1 pt of the original's test accuracy. Trial times are their
   Optuna completion times, counted from the start of the ``edgeopt optimize`` process.

Figures, per search:

- **time to beat by hand**: minutes until the search holds a trial within 1 pt that is at
  least 5 % faster (ratio <= 0.95 x, the noise floor of one pass) and no larger than the best
  by-hand recipe within 1 pt. A trial that repeats the by-hand recipe ties; it does not beat.
- **hypervolume at equal wall-clock**, every minute: objectives (test error, latency / fp32,
  size / fp32), reference point (original's error + 1 pt, 1, 1): only usable candidates,
  faster and smaller than the original, count. Shown as a share of the reference box.
- **where the front comes from**: the final within-1-pt front's members by origin (baseline,
  expert seed, promotion, sibling, the user's recipe, the sampler); and how many of the
  sampler's trials were stopped at their first report.

    python benchmarks/search_efficiency.py --model resnet18_cifar --seed 0    # 35 min
    python benchmarks/search_efficiency.py --model resnet18_cifar --quick     # 2 x 3 min check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import real_models as rm  # noqa: E402
from results_md import write_section  # noqa: E402
from run import hypervolume  # noqa: E402

WORK = HERE / "work" / "efficiency"
MODELS = ("resnet18_cifar", "mobilenetv2_cifar")
WIDTH = 0.5
SEARCHES: dict[str, tuple[str, ...]] = {
    "edgeopt": (),
    "random": ("--sampler", "random", "--plain-search"),
    "tpe": ("--sampler", "tpe", "--plain-search"),
}
LABELS = {
    "edgeopt": "edgeopt default",
    "random": "(a) random, --plain-search",
    "tpe": "(b) plain TPE, --plain-search",
}
BEAT_MARGIN = 0.95
"""A trial beats the by-hand recipe only at <= 95 % of its latency: one pass's noise floor."""
ORIGINS = ("baseline", "seed", "promotion", "sibling", "your recipe", "sampler")


def log(msg: str) -> None:
    """A timestamped progress line."""
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


@dataclass
class TrialPoint:
    """One complete trial: when it ended, where it came from, and its measured numbers."""

    number: int
    origin: str
    minutes: float
    describe: str
    onnx: str
    test_accuracy: float
    size_mb: float
    ratio: float = float("nan")
    built_by: str = ""
    """A sibling's or promotion's: the origin of the trial whose build it reuses."""


@dataclass
class SearchResult:
    """One search of one seed, reduced to what the figures need."""

    name: str
    wall_min: float
    error: str | None
    trials: list[TrialPoint] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    sampler_trials: int = 0
    sampler_first_rung: int = 0
    sampler_stopped_later: int = 0


@dataclass
class SeedRun:
    """Everything measured for one model and seed (written as JSON, rendered from JSON)."""

    model: str
    seed: int
    budget_min: float
    date: str
    fp32_test: float
    fp32_mb: float
    fp32_ms: float
    load_1m: float | None
    hand: list[dict[str, Any]]
    searches: list[SearchResult]


def origin_of(attrs: dict[str, Any]) -> str:
    """Which part of the search enqueued a trial, from its Optuna user attributes."""
    from edgeopt.search.strategy.halving import PROMOTED_ATTR
    from edgeopt.search.strategy.seeds import SEED_ATTR, SIBLING_ATTR
    from edgeopt.search.strategy.user_space import RECIPE_ATTR

    if "baseline" in attrs:
        return "baseline"
    for key, name in (
        (RECIPE_ATTR, "your recipe"),
        (PROMOTED_ATTR, "promotion"),
        (SIBLING_ATTR, "sibling"),
        (SEED_ATTR, "seed"),
    ):
        if key in attrs:
            return name
    return "sampler"


def read_search(
    name: str, run_dir: Path, started: dt.datetime, wall_s: float, error: str | None
) -> SearchResult:
    """The complete trials of a finished search with their origin and completion minute."""
    import optuna

    from edgeopt.measure.runtime import size_mb

    result = SearchResult(name, wall_s / 60, error)
    storage = f"sqlite:///{run_dir / 'study.db'}"
    names = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=names[0], storage=storage)
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        state = t.state.name.lower()
        result.states[state] = result.states.get(state, 0) + 1
        origin = origin_of(t.user_attrs)
        if origin == "sampler":
            result.sampler_trials += 1
            if t.state == optuna.trial.TrialState.PRUNED:
                if len(t.intermediate_values) <= 1:
                    result.sampler_first_rung += 1
                else:
                    result.sampler_stopped_later += 1
        onnx = t.user_attrs.get("onnx")
        if t.state != optuna.trial.TrialState.COMPLETE or not onnx or not t.datetime_complete:
            continue
        minutes = (t.datetime_complete - started).total_seconds() / 60
        path = run_dir / onnx
        result.trials.append(
            TrialPoint(
                t.number,
                origin,
                minutes,
                str(t.user_attrs.get("describe", "")),
                str(path),
                float("nan"),
                size_mb(path),
                built_by=built_by(t.user_attrs, trials),
            )
        )
    return result


def built_by(attrs: dict[str, Any], trials: list[Any]) -> str:
    """The origin of the build a sibling or promotion reuses (followed up the chain)."""
    from edgeopt.search.strategy.halving import PROMOTED_ATTR
    from edgeopt.search.strategy.seeds import SIBLING_ATTR

    seen = 0
    while seen < len(trials):
        parent = attrs.get(SIBLING_ATTR, attrs.get(PROMOTED_ATTR))
        if parent is None:
            return "" if seen == 0 else origin_of(attrs)
        attrs = trials[int(parent)].user_attrs
        seen += 1
    return ""


def measure_all(
    searches: list[SearchResult], fp32: Path, hand: rm.ByHand, data: Any
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Test accuracy of every trial; one interleaved pass over fp32, by hand and every trial
    within 1 pt. Returns the fp32 numbers and the by-hand rows."""
    from edgeopt.measure.accuracy import onnx_accuracy
    from edgeopt.measure.local_runner import measure_latency
    from edgeopt.measure.runtime import size_mb

    x, y = data.x_test, data.y_test
    cache: dict[str, float] = {}

    def acc(path: str | Path) -> float:
        key = str(path)
        if key not in cache:
            cache[key] = onnx_accuracy(path, x, y, threads=1)
        return cache[key]

    base = acc(fp32)
    bar = base - rm.MAX_DROP - 1e-9
    for s in searches:
        for t in s.trials:
            t.test_accuracy = acc(t.onnx)
    hand_rows = [
        {"label": label, "path": str(p), "test_accuracy": acc(p), "size_mb": size_mb(p)}
        for label, p in hand.variants
    ]
    paths: list[str] = [str(fp32)] + [h["path"] for h in hand_rows]
    for s in searches:
        paths += [t.onnx for t in s.trials if t.test_accuracy >= bar and t.onnx not in paths]
    log(f"  one interleaved pass over {len(paths)} models")
    stats = measure_latency(
        paths,
        threads=1,
        input_shape=tuple(data.x_train.shape[1:]),
        sample=data.x_val[:1],
        min_rounds=10,
        time_budget_s=240.0,
    )
    ratio = {p: st.ratio_to_first for p, st in zip(paths, stats, strict=True)}
    for h in hand_rows:
        h["ratio"] = ratio[h["path"]]
    for s in searches:
        for t in s.trials:
            t.ratio = ratio.get(t.onnx, float("nan"))
    load = (stats[0].load or {}).get("loadavg_1m")
    return {"test": base, "mb": size_mb(fp32), "ms": stats[0].p50_ms, "load": load}, hand_rows


# ----------------------------------------------------------------------------------- figures
def best_hand(run: SeedRun) -> dict[str, Any] | None:
    """The fastest by-hand model within 1 pt of the original."""
    bar = run.fp32_test - rm.MAX_DROP - 1e-9
    ok = [h for h in run.hand if h["test_accuracy"] >= bar]
    return min(ok, key=lambda h: h["ratio"]) if ok else None


def usable(run: SeedRun, s: SearchResult, minutes: float = float("inf")) -> list[TrialPoint]:
    """Trials within 1 pt, measured, complete by ``minutes``."""
    bar = run.fp32_test - rm.MAX_DROP - 1e-9
    return [
        t
        for t in s.trials
        if t.test_accuracy >= bar and t.ratio == t.ratio and t.minutes <= minutes
    ]


def time_to_beat(run: SeedRun, s: SearchResult) -> float | None:
    """Minutes to the first trial that beats the best by-hand recipe; None: never."""
    hand = best_hand(run)
    if hand is None:
        return None
    wins = [
        t.minutes
        for t in usable(run, s)
        if t.ratio <= BEAT_MARGIN * hand["ratio"] and t.size_mb <= hand["size_mb"] + 1e-9
    ]
    return min(wins) if wins else None


def hv_at(run: SeedRun, s: SearchResult, minutes: float) -> float:
    """Hypervolume of the usable trials complete by ``minutes``, as a share of the box."""
    ref_err = 1.0 - run.fp32_test + rm.MAX_DROP
    pts = [
        (1.0 - t.test_accuracy, t.ratio, t.size_mb / run.fp32_mb) for t in usable(run, s, minutes)
    ]
    front = [p for p in pts if not any(dominates(q, p) for q in pts)]
    return hypervolume(sorted(set(front)), (ref_err, 1.0, 1.0)) / ref_err


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` no worse than ``b`` everywhere and better somewhere (minimization)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def front_origins(run: SeedRun, s: SearchResult) -> dict[str, int]:
    """Origin counts of the final within-1-pt front (test error, latency, size)."""
    trials = usable(run, s)
    key = {t.number: (1.0 - t.test_accuracy, t.ratio, t.size_mb) for t in trials}
    front = [t for t in trials if not any(dominates(key[o.number], key[t.number]) for o in trials)]
    counts: dict[str, int] = {}
    for t in front:
        key = f"{t.origin} of a {t.built_by}" if t.built_by else t.origin
        counts[key] = counts.get(key, 0) + 1
    return counts


def ceiling(run: SeedRun) -> float:
    """Hypervolume of the union of every search's usable trials: the best front known."""
    union = SearchResult("union", 0.0, None, [t for s in run.searches for t in s.trials])
    return hv_at(run, union, float("inf"))


# ----------------------------------------------------------------------------------- render
def _min(v: float | None, budget: float) -> str:
    return f"{v:.1f}" if v is not None else f"never (> {budget:g})"


def render(model: str, runs: list[SeedRun], command: str) -> str:
    """The model's RESULTS.md section from every seed's JSON."""
    from edgeopt.measure.runtime import host_description

    runs = sorted(runs, key=lambda r: r.seed)
    budget = runs[0].budget_min
    lines = [
        f"## Search efficiency at equal wall-clock (benchmarks/search_efficiency.py): {model} "
        f"x{WIDTH:g}",
        "",
        f"- last run: {runs[-1].date}; command: `{command}`",
        f"- machine: {host_description()}",
        f"- `edgeopt optimize --target cpu --timeout {budget:g}m`, one search at a time; test "
        "accuracy by ORT for every trial; latency ratio to fp32 from one interleaved pass per "
        "seed (1 ORT thread, batch 1); minutes counted from the start of the optimize process.",
        f"- beat by hand: within 1 pt, latency <= {BEAT_MARGIN:g} x and size <= the best "
        "by-hand recipe within 1 pt. Hypervolume: (test error, latency/fp32, size/fp32) vs "
        "(fp32 error + 1 pt, 1, 1), as % of that box.",
        "",
    ]
    for r in runs:
        hand = best_hand(r)
        hand_txt = (
            f"{hand['label']}: {hand['ratio']:.3f}x fp32 latency, {hand['size_mb']:.2f} MB, "
            f"{(hand['test_accuracy'] - r.fp32_test) * 100:+.1f} pt"
            if hand
            else "none within 1 pt"
        )
        load = f", load {r.load_1m:.2f}" if r.load_1m is not None else ""
        lines += [
            f"### seed {r.seed} (fp32 test {r.fp32_test:.1%}, {r.fp32_mb:.2f} MB, "
            f"{r.fp32_ms:.2f} ms{load})",
            "",
            f"Best by hand within 1 pt: {hand_txt}.",
            "",
            "| search | trials (complete; stopped; failed; other) | wall min "
            "| minutes to beat by hand "
            "| HV 1 min | HV 3 | HV 5 | HV 10 | HV end | best within 1 pt (ratio, MB) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in r.searches:
            if s.error and not s.trials:
                lines.append(f"| {LABELS[s.name]} | failed: {s.error} |||||||||")
                continue
            st = s.states
            n = sum(st.values())
            done = st.get("complete", 0) + st.get("pruned", 0) + st.get("fail", 0)
            hvs = [hv_at(r, s, m) * 100 for m in (1, 3, 5, 10, float("inf"))]
            ok = usable(r, s)
            best = min(ok, key=lambda t: t.ratio) if ok else None
            best_txt = f"{best.ratio:.3f}x, {best.size_mb:.2f} (#{best.number})" if best else "-"
            lines.append(
                f"| {LABELS[s.name]} | {n} ({st.get('complete', 0)}; {st.get('pruned', 0)}; "
                f"{st.get('fail', 0)}; {n - done}) | {s.wall_min:.1f} | "
                f"{_min(time_to_beat(r, s), budget)} | "
                + " | ".join(f"{v:.1f}" for v in hvs)
                + f" | {best_txt} |"
            )
        lines += ["", "Where the final within-1-pt front comes from, and the sampler's trials:", ""]
        lines += [
            "| search | front members by origin | sampler's trials | stopped at first report "
            "| stopped later |",
            "|---|---|---|---|---|",
        ]
        for s in r.searches:
            origins = front_origins(r, s)
            total = sum(origins.values())
            order = sorted(origins, key=lambda o: (ORIGINS.index(o.split(" of a ")[0]), o))
            text = ", ".join(f"{o} {origins[o]}" for o in order) or "-"
            lines.append(
                f"| {LABELS[s.name]} | {text} (of {total}) | {s.sampler_trials} | "
                f"{s.sampler_first_rung} | {s.sampler_stopped_later} |"
            )
        lines.append("")
    lines += summary(runs)
    return "\n".join(lines)


def summary(runs: list[SeedRun]) -> list[str]:
    """Medians over seeds and the issue's goals."""
    budget = runs[0].budget_min
    lines = [f"**Median over {len(runs)} seed(s)**", ""]
    ttb: dict[str, float] = {}
    hv: dict[tuple[str, int], float] = {}
    names = [n for n in SEARCHES if any(s.name == n for r in runs for s in r.searches)]
    for name in names:
        vals = [time_to_beat(r, s) for r in runs for s in r.searches if s.name == name and s.trials]
        ttb[name] = statistics.median([v if v is not None else budget * 2 for v in vals] or [0])
        for m in (5, 10):
            hvs = [hv_at(r, s, m) for r in runs for s in r.searches if s.name == name]
            hv[name, m] = statistics.median(hvs) if hvs else 0.0
    top = statistics.median([ceiling(r) for r in runs])
    never = f"(never counted as {budget * 2:g})"
    lines.append(
        "- minutes to beat by hand: "
        + ", ".join(f"{LABELS[n]} {ttb[n]:.1f}" for n in names)
        + f" {never}"
    )
    for base in [n for n in names if n != "edgeopt"]:
        ok = ttb["edgeopt"] <= ttb[base] / 3
        lines.append(
            f"- goal edgeopt <= 1/3 of {LABELS[base]}: {ttb['edgeopt']:.1f} vs "
            f"{ttb[base] / 3:.1f}: **{'met' if ok else 'not met'}**"
        )
        for m in (5, 10):
            a, b = hv[("edgeopt", m)], hv[(base, m)]
            ratio = a / b if b > 0 else float("inf")
            lines.append(
                f"- goal HV edgeopt >= 1.2x {LABELS[base]} at {m} min: {ratio:.2f}x "
                f"({a * 100:.1f} vs {b * 100:.1f}): **{'met' if ratio >= 1.2 else 'not met'}**"
            )
    lines.append(
        f"- ceiling: the union of all searches' usable trials has HV {top * 100:.1f} (median); "
        + ", ".join(
            f"{LABELS[n]} reaches {hv[n, 10] / top:.0%} of it at 10 min" for n in names if top
        )
        + "; no search can beat a baseline by more than that union over the baseline's HV."
    )
    return lines


# ----------------------------------------------------------------------------------- main
def run_seed(model: str, seed: int, budget_s: float, searches: tuple[str, ...]) -> SeedRun:
    """Three searches, the by-hand models, one measurement pass."""
    from edgeopt.data import load_npz

    model_path, data_path = rm.ensure_model(model, WIDTH, None)
    data = load_npz(data_path)
    tag = f"{model}-w{WIDTH:g}"
    results: list[SearchResult] = []
    for name in searches:
        out = WORK / f"{tag}-s{seed}-{name}"
        log(f"{model} seed {seed}: {LABELS[name]}, {budget_s / 60:g} min")
        started = dt.datetime.now()
        o = rm.run_search(model_path, data_path, out, budget_s, seed, extra=SEARCHES[name])
        results.append(read_search(name, out, started, o.wall_s, o.error))
        log(
            f"  {len(results[-1].trials)} complete, {o.wall_s / 60:.1f} min"
            + (f"; {o.error}" if o.error else "")
        )
    fp32 = WORK / f"{tag}-s{seed}-{searches[0]}" / "baseline" / "model.onnx"
    log(f"{model}: by-hand recipes")
    hand = rm.build_by_hand(model_path, fp32, data, WORK / f"{tag}-byhand")
    log(f"{model} seed {seed}: measuring")
    base, hand_rows = measure_all(results, fp32, hand, data)
    return SeedRun(
        model,
        seed,
        budget_s / 60,
        f"{dt.date.today()}",
        base["test"],
        base["mb"],
        base["ms"],
        base["load"],
        hand_rows,
        results,
    )


def load_seed(path: Path) -> SeedRun:
    """A SeedRun back from its JSON."""
    doc = json.loads(path.read_text())
    searches = [
        SearchResult(**{**s, "trials": [TrialPoint(**t) for t in s["trials"]]})
        for s in doc.pop("searches")
    ]
    return SeedRun(**doc, searches=searches)


def main(argv: list[str] | None = None) -> int:
    """Run one model and seed, save its JSON, regenerate the model's section."""
    import torch

    from edgeopt.config import parse_duration

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=MODELS, default="resnet18_cifar")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", default="10m", help="time per search (default 10m)")
    ap.add_argument("--quick", action="store_true", help="2 searches x 2 min, not written")
    ap.add_argument("--render-only", action="store_true", help="rewrite the section from JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if not args.render_only:
        budget = parse_duration("2m" if args.quick else args.budget)
        names = ("edgeopt", "random") if args.quick else tuple(SEARCHES)
        run = run_seed(args.model, args.seed, budget, names)
        suffix = "-quick" if args.quick else ""
        out = WORK / f"{args.model}-s{args.seed}{suffix}.json"
        out.write_text(json.dumps(asdict(run), indent=1))
        if args.quick:
            print(render(args.model, [run], "(quick check)"))
            return 0
    paths = sorted(WORK.glob(f"{args.model}-s[0-9]*.json"))
    runs = [load_seed(p) for p in paths if "quick" not in p.name]
    seeds = " ".join(str(r.seed) for r in sorted(runs, key=lambda r: r.seed))
    command = (
        f"python benchmarks/search_efficiency.py --model {args.model} --seed N "
        f"(seeds {seeds}), {shlex.quote(args.budget)} per search"
    )
    text = render(args.model, runs, command)
    print(text)
    key = f"search_efficiency:{args.model}"
    write_section(f"<!-- {key}:start -->", f"<!-- {key}:end -->", text)
    log(f"wrote its section of benchmarks/RESULTS.md in {(time.monotonic() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
