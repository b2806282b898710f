"""Transformers at the edge (issue 27, "Proof"): edgeopt vs the recipes a user would run by
hand on a ViT-class image classifier (``vit_cifar``: digits at 3x32x32, one float input) and a
BERT-class text classifier (``bert_text``: ``input_ids`` + ``attention_mask``, 32 tokens,
the seeded task of ``models/text_task.py``), both built by ``models/build_real.py``.

One model and one seed per invocation, each its own RESULTS.md section:

1. ``edgeopt optimize MODEL --data DATA --target cpu --timeout BUDGET --seed S`` as a
   subprocess (``real_models.run_search``); a search that fails (e.g. a two-input model
   before ``optimize`` takes one) is reported and the by-hand part still runs;
2. the by-hand recipes, public tools only, all from the same fp32 ONNX (the run's
   ``baseline/model.onnx``, else edgeopt's export of the bundle):
   R1 Olive CPU style: ORT ``optimize_model(model_type=bert|vit, num_heads=0,
   hidden_size=0)`` then ``quantize_dynamic`` (QInt8, ``DefaultTensorType`` FLOAT);
   R2 static QDQ: ``quant_pre_process`` then ``quantize_static`` (QDQ, u8 activations, s8
   per-channel weights, MinMax, 128 training samples), on the unfused graph;
   R3 plain ``quantize_dynamic``;
   R4 Torch-Pruning heads 50 % (``num_heads``, ``prune_num_heads=True``,
   ``head_pruning_ratio=0.5``; the residual stream's writers and the classifier left whole;
   head attributes fixed up, with ``edgeopt.stages.attention``'s site table) + 2 epochs
   AdamW 1e-4 fine-tune, exported; R5 = R4 then R1;
3. test accuracy of every file through ORT (1 thread), then ONE interleaved latency pass
   (edgeopt's timing child, 1 ORT thread, batch 1) over fp32, R1-R5 and every edgeopt front
   member within 1 pt of fp32; ``bert_text``: the fp32 file, the best by-hand and edgeopt's
   best within 1 pt again at 16, 64 and 128 tokens when every one of them has a dynamic
   sequence axis.

Goal: edgeopt's best within 1 pt >= 2x faster than the best by-hand recipe within 1 pt, at no
larger size (20-minute searches, seeds 0 and 1).

    python benchmarks/transformer_models.py --model vit_cifar --seed 0       # the proof, 20 min
    python benchmarks/transformer_models.py --model bert_text --seed 1
    python benchmarks/transformer_models.py --model vit_cifar --quick        # tiny smoke check
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import real_models as rm  # noqa: E402
from results_md import write_section  # noqa: E402

from edgeopt.inputs import ModelInputs  # noqa: E402

if TYPE_CHECKING:
    from torch import nn

    from edgeopt.data import DataBundle

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "transformers"
MODELS_DIR = ROOT / "models" / "real"
BUILD_REAL = ROOT / "models" / "build_real.py"
MODELS = {"vit_cifar": ("vit", "digits32.npz"), "bert_text": ("bert", "text4.npz")}
"""Model -> (ORT optimizer model type, the data file build_real.py writes beside it)."""

MAX_DROP = 0.01
CALIB_SAMPLES = 128
HEAD_RATIO = 0.5
FT_EPOCHS = 2
FT_LR = 1e-4
FT_BATCH = 64
SEQ_LENS = (16, 64, 128)
GOAL_SPEEDUP = 2.0
GOAL_BUDGET_S = 20 * 60

R1 = "R1 Olive CPU: ORT transformer optimizer + dynamic int8"
R2 = "R2 static QDQ int8 u8/s8 per-channel MinMax (unfused)"
R3 = "R3 plain dynamic int8 (quantize_dynamic)"
R4 = f"R4 TP heads {HEAD_RATIO:.0%} + {FT_EPOCHS} ep AdamW FT (fp32)"
R5 = "R5 R4 then R1"


def log(msg: str) -> None:
    """A timestamped progress line."""
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


# ----------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """One invocation: the model, its width and training epochs, the search and threads."""

    model: str
    seed: int
    budget_s: float
    width: float
    train_epochs: int | None
    quick: bool
    threads: int | None
    write: bool
    optimize_args: tuple[str, ...] = ()


def parse_args(argv: list[str] | None) -> Settings:
    """Command line -> Settings; ``--quick`` fills in tiny settings not given explicitly."""
    from edgeopt.config import parse_duration

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, choices=list(MODELS))
    ap.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    ap.add_argument("--budget", default=None, help="search time (default 20m; --quick 1m)")
    ap.add_argument("--width", type=float, default=None, help="width (default 1; --quick 0.25)")
    ap.add_argument(
        "--train-epochs",
        type=int,
        default=None,
        help="training epochs of a model that must be built (default build_real's; --quick 1)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of the build, search and fine-tune (default: the search's own "
        "auto, 2 for the rest; --quick 1)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny widths, epochs and budget: a check, not the proof",
    )
    ap.add_argument(
        "--optimize-args",
        default="",
        help="more `edgeopt optimize` arguments, one shell-quoted string (e.g. once optimize "
        "has it, bert_text's '--seq-lens 16,32,64,128')",
    )
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    a = ap.parse_args(argv)
    q = a.quick
    return Settings(
        model=a.model,
        seed=a.seed,
        budget_s=parse_duration(a.budget or ("1m" if q else "20m")),
        width=a.width if a.width is not None else (0.25 if q else 1.0),
        train_epochs=a.train_epochs if a.train_epochs is not None else (1 if q else None),
        quick=q,
        threads=a.threads if a.threads is not None else (1 if q else None),
        write=not a.no_write,
        optimize_args=tuple(shlex.split(a.optimize_args)),
    )


def ensure_model(s: Settings) -> tuple[Path, Path]:
    """(bundle, data .npz) of ``s.model``, built by ``models/build_real.py`` when missing
    (``models/real/``, or ``models/real/w<width>-e<epochs>/`` for other settings)."""
    out = MODELS_DIR
    if s.width != 1.0 or s.train_epochs is not None:
        epochs = s.train_epochs if s.train_epochs is not None else "default"
        out = MODELS_DIR / f"w{s.width:g}-e{epochs}"
    model, data = out / f"{s.model}.pt", out / MODELS[s.model][1]
    if model.exists() and data.exists():
        log(f"{s.model}: using {model.relative_to(ROOT)}")
        return model, data
    cmd = [sys.executable, str(BUILD_REAL), "--models", s.model, "--width", f"{s.width:g}"]
    cmd += ["--out", str(out), "--threads", str(s.threads or 2), "--seed", "0"]
    if s.train_epochs is not None:
        cmd += ["--epochs", str(s.train_epochs)]
    log(f"{s.model}: building ({' '.join(shlex.quote(c) for c in cmd[1:])})")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0 or not model.exists():
        raise RuntimeError(f"build_real.py failed for {s.model}:\n{proc.stdout}\n{proc.stderr}")
    log(f"  {proc.stdout.strip().splitlines()[-1]}")
    return model, data


# ----------------------------------------------------------------------------------- by hand
def feeds_of(inputs: ModelInputs, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """ORT feeds of batch ``x``: by the graph's own input name for one float input, by field
    name (``ModelInputs.feeds``) for several."""
    if inputs.is_single:
        return {names[0]: np.ascontiguousarray(x, dtype=np.float32)}
    return inputs.feeds(x)


def olive_cpu(src: Path, dst: Path, kind: str) -> str:
    """R1: ORT's transformer optimizer (heads and hidden size detected per node) and dynamic
    int8 on the fused graph; returns what fused (``Attention 2, ...``)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    fused = dst.with_name(dst.stem + ".fused.onnx")
    opt = optimize_model(str(src), model_type=kind, num_heads=0, hidden_size=0)
    opt.save_model_to_file(str(fused))
    stats = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    quantize_dynamic(
        str(fused),
        str(dst),
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return ", ".join(f"{k} {v}" for k, v in sorted(stats.items())) or "nothing"


def static_qdq(src: Path, dst: Path, inputs: ModelInputs, x_calib: np.ndarray) -> str:
    """R2: ``quant_pre_process`` then ``quantize_static`` (QDQ, u8/s8 per-channel, MinMax) on
    ``x_calib``, one sample per read; returns a note ("" when pre-processing worked)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    pre, note = dst.with_name(dst.stem + ".pre.onnx"), ""
    try:
        quant_pre_process(str(src), str(pre))
    except Exception as exc:  # a user would quantize the plain export then
        note, pre = f"quant_pre_process failed ({type(exc).__name__}), plain export used", src
    names = [i.name for i in onnx.load(str(pre), load_external_data=False).graph.input]
    rows = iter([feeds_of(inputs, names, x_calib[i : i + 1]) for i in range(len(x_calib))])

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(rows, None)

    quantize_static(
        str(pre),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return note


def plain_dynamic(src: Path, dst: Path) -> None:
    """R3: ``quantize_dynamic`` with its defaults (QInt8 weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def prune_heads(module: nn.Module, inputs: ModelInputs) -> tuple[nn.Module, str]:
    """R4's pruning: Torch-Pruning ``BasePruner`` told every attention site's heads
    (``num_heads``), whole heads removed at HEAD_RATIO from the q/k/v projections only, the
    residual stream's writers and the classifier ignored, the attributes fixed after the
    step. Returns the pruned copy and ``heads 8 -> 4``."""
    import torch
    import torch_pruning as tp

    from edgeopt.stages.attention import (
        find_attention,
        first_layer,
        fix_attributes,
        num_heads_of,
        projections_of,
        residual_layers,
    )
    from edgeopt.training.batch import example

    model = copy.deepcopy(module).eval()
    x = example(inputs)
    sites = find_attention(model)
    if not sites:
        raise RuntimeError("no attention site Torch-Pruning can be told the heads of")
    names = dict(model.named_modules())
    first = first_layer(model, x)
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    ignored = [names[n] for n in residual_layers(graph, model, first)] if first else []
    ignored.append([m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1])
    before = sites[0].heads
    pruner = tp.pruner.BasePruner(
        model,
        x,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.0,
        pruning_ratio_dict={p: HEAD_RATIO for p in projections_of(model, sites)},
        ignored_layers=ignored,
        num_heads=num_heads_of(model, sites),
        prune_num_heads=True,
        head_pruning_ratio=HEAD_RATIO,
    )
    pruner.step()
    fix_attributes(model, sites, pruner.num_heads)
    after = find_attention(model)
    return model, f"heads {before} -> {after[0].heads if after else '?'} per block"


def fine_tune(model: nn.Module, data: DataBundle, seed: int) -> None:
    """FT_EPOCHS epochs of AdamW (lr FT_LR, batch FT_BATCH, no augmentation) on x_train."""
    import torch
    from torch.nn import functional as F

    from edgeopt.training.batch import forward, take, tensors

    x, y = tensors(data.x_train), torch.from_numpy(np.asarray(data.y_train, dtype=np.int64))
    opt = torch.optim.AdamW(model.parameters(), lr=FT_LR)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(FT_EPOCHS):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), FT_BATCH):
            idx = order[i : i + FT_BATCH]
            loss = F.cross_entropy(forward(model, take(x, idx)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()


ByHand = rm.ByHand


def build_by_hand(
    bundle: Path, fp32: Path, kind: str, data: DataBundle, out: Path, threads: int
) -> ByHand:
    """R1-R5 from ``fp32`` (R4/R5 from the bundle's torch module); a recipe that fails is a
    note, the others still count."""
    import torch

    from edgeopt.loading import load_model
    from edgeopt.onnx_export import export_onnx

    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    loaded = load_model(bundle)
    inputs = loaded.inputs
    x_calib = data.x_train[:CALIB_SAMPLES]
    hand = ByHand()

    def attempt(label: str, fn: Any, dst: Path, *args: Any) -> None:
        t0 = time.monotonic()
        try:
            note = fn(*args)
        except Exception as exc:
            hand.notes.append(f"{label} failed: {type(exc).__name__}: {str(exc)[:300]}")
            log(f"  {label} failed: {type(exc).__name__}: {exc}")
            return
        hand.variants.append((label, dst))
        if note:
            hand.notes.append(f"{label}: {note}")
        log(f"  {label} ({time.monotonic() - t0:.0f}s)" + (f": {note}" if note else ""))

    r1 = out / "r1_olive.onnx"
    attempt(R1, lambda: "fused " + olive_cpu(fp32, r1, kind), r1)
    r2 = out / "r2_static_qdq.onnx"
    attempt(R2, static_qdq, r2, fp32, r2, inputs, x_calib)
    r3 = out / "r3_dynamic.onnx"
    attempt(R3, plain_dynamic, r3, fp32, r3)
    r4 = out / "r4_tp_heads_ft.onnx"

    def r4_build() -> str:
        pruned, what = prune_heads(loaded.module, inputs)
        fine_tune(pruned, data, seed=0)
        shape = inputs if not inputs.is_single else inputs.first_shape
        export_onnx(pruned, shape, r4, check_inputs=data.x_val[:8])
        return what

    attempt(R4, r4_build, r4)
    if r4.exists() and any(label == R4 for label, _ in hand.variants):
        r5 = out / "r5_tp_olive.onnx"
        attempt(R5, lambda: "fused " + olive_cpu(r4, r5, kind), r5)
    return hand


# ----------------------------------------------------------------------------------- measure
@dataclass
class Point:
    """One file: test accuracy (ORT), size, latency ratio to fp32 (interleaved)."""

    label: str
    kind: str  # "original", "by hand", "edgeopt"
    path: Path
    accuracy: float
    size_mb: float
    ratio: float = float("nan")
    seq_ratios: dict[int, float] = field(default_factory=dict)


@dataclass
class Result:
    """Everything one invocation measured."""

    search: rm.SearchOutcome
    hand: ByHand
    points: list[Point] = field(default_factory=list)
    fp32_ms: float = float("nan")
    load: float | None = None
    seq_note: str = ""

    def best(self, kind: str) -> Point | None:
        """The fastest point of ``kind`` within 1 pt of fp32 (None: none is)."""
        bar = self.points[0].accuracy - MAX_DROP - 1e-9
        ok = [p for p in self.points if p.kind == kind and p.accuracy >= bar]
        return min(ok, key=lambda p: p.ratio) if ok else None


def seq_dynamic(path: Path) -> bool:
    """Whether every integer input of ``path`` has a symbolic (dynamic) axis 1."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    ints = [i for i in graph.input if i.type.tensor_type.elem_type in (6, 7)]
    return bool(ints) and all(
        len(i.type.tensor_type.shape.dim) > 1 and i.type.tensor_type.shape.dim[1].dim_param
        for i in ints
    )


def measure(
    search: rm.SearchOutcome, fp32: Path, hand: ByHand, data: DataBundle, inputs: ModelInputs
) -> Result:
    """Test accuracy of every file, then one interleaved pass at 1 thread over fp32, the
    by-hand files and the front members within 1 pt; for several inputs with a sequence axis
    the three best again at each of SEQ_LENS."""
    from edgeopt.measure.accuracy import onnx_accuracy
    from edgeopt.measure.local_runner import measure_latency
    from edgeopt.measure.runtime import size_mb

    assert data.x_test is not None and data.y_test is not None
    x, y = data.x_test, data.y_test

    def point(label: str, kind: str, path: Path) -> Point:
        return Point(label, kind, path, onnx_accuracy(path, x, y, threads=1), size_mb(path))

    base = point("fp32 original", "original", fp32)
    points = [base] + [point(label, "by hand", p) for label, p in hand.variants]
    front = [point(label, "edgeopt", p) for label, p in search.front]
    points += [p for p in front if p.accuracy >= base.accuracy - MAX_DROP - 1e-9]
    result = Result(search, hand, points)
    shape = inputs.first_shape
    stats = measure_latency(
        [p.path for p in points],
        threads=1,
        input_shape=shape,
        sample=data.x_val[:1],
        min_rounds=10,
        time_budget_s=60.0,
    )
    for p, s in zip(points, stats, strict=True):
        p.ratio = s.ratio_to_first
    result.fp32_ms = stats[0].p50_ms
    result.load = (stats[0].load or {}).get("loadavg_1m")
    if inputs.seq_len is None:
        return result
    three = [base] + [b for b in (result.best("by hand"), result.best("edgeopt")) if b]
    fixed = [p.label for p in three if not seq_dynamic(p.path)]
    if fixed:
        result.seq_note = f"not timed at {SEQ_LENS}: no dynamic sequence axis in {fixed}"
        return result
    for n in SEQ_LENS:
        sample = inputs.with_seq_len(n).synthetic(1, seed=0)
        st = measure_latency(
            [p.path for p in three],
            threads=1,
            input_shape=(n,),
            sample=sample,
            min_rounds=10,
            time_budget_s=30.0,
        )
        for p, s in zip(three, st, strict=True):
            p.seq_ratios[n] = s.ratio_to_first
        log(
            f"  {n} tokens: fp32 {st[0].p50_ms:.3f} ms; "
            + ", ".join(
                f"{p.label[:24]} {s.ratio_to_first:.3f}x" for p, s in zip(three, st, strict=True)
            )
        )
    return result


# ----------------------------------------------------------------------------------- report
def goal_line(r: Result, s: Settings) -> str:
    """edgeopt's best within 1 pt vs the best by-hand within 1 pt: met / not met."""
    if not r.points:
        return "Goal: **not measured**."
    e, h = r.best("edgeopt"), r.best("by hand")
    ref = h or r.points[0]
    if e is None:
        why = r.search.error or "no front member within 1 pt of fp32"
        goal = f"Goal (>= {GOAL_SPEEDUP:g}x the best by-hand within 1 pt, no larger)"
        return f"{goal}: **not met** ({why})."
    speed = ref.ratio / e.ratio
    no_larger = e.size_mb <= ref.size_mb + 1e-9
    met = speed >= GOAL_SPEEDUP and no_larger
    scope = ""
    if s.quick or abs(s.budget_s - GOAL_BUDGET_S) > 1 or s.width != 1.0:
        scope = " (the issue's goal is for full-width models and 20-minute searches)"
    return (
        f"edgeopt's best within 1 pt ({e.label}) is **{speed:.2f}x** faster than the best by-hand "
        f"within 1 pt ({ref.label}), size {e.size_mb:.3f} vs {ref.size_mb:.3f} MB. Goal (>= "
        f"{GOAL_SPEEDUP:g}x, no larger): **{'met' if met else 'not met'}**{scope}"
    )


def render(s: Settings, r: Result, command: str, seconds: float, params_m: float) -> str:
    """The RESULTS.md section (without markers)."""
    from edgeopt.measure.runtime import host_description

    base = r.points[0]
    sr = r.search
    more = "".join(" " + shlex.quote(a) for a in s.optimize_args)
    title = f"## Transformers: {s.model} seed {s.seed} (benchmarks/transformer_models.py)"
    lines = [title + (": quick check, not the proof" if s.quick else ""), ""]
    lines += [
        f"- date: {dt.date.today().isoformat()}; command: `{command}`; runtime "
        f"{seconds / 60:.1f} min"
        + (f"; load average (1 min) while timing {r.load:.2f}" if r.load is not None else ""),
        f"- machine: {host_description()}",
        f"- model: {s.model} width {s.width:g} ({params_m:.2f} M params), fp32 {base.size_mb:.3f}"
        f" MB, test {base.accuracy:.2%}, fp32 p50 {r.fp32_ms:.3f} ms at 1 thread",
        f"- search: `edgeopt optimize --target cpu --timeout {s.budget_s / 60:g}m --seed "
        f"{s.seed}{more}`: {sr.complete} complete ({sr.in_budget} in budget), "
        f"{sr.stopped} stopped, {sr.failed} failed, {sr.wall_s / 60:.1f} min"
        + (f"; **search failed**: {sr.error}" if sr.error else ""),
        "- every number measured here: test accuracy through ONNX Runtime (1 thread) for every "
        "file alike; latency ratio = median over rounds of (file / fp32) from one interleaved "
        "pass at 1 ORT thread, batch 1; size = ONNX file. Rows: fp32, the by-hand recipes "
        "(public tools only, all from the same fp32 ONNX) and every edgeopt front member "
        "within 1 pt.",
        "",
    ]
    seq_cols = SEQ_LENS if any(p.seq_ratios for p in r.points) else ()
    head = "| model | from | test acc | vs fp32 | latency vs fp32 | speed-up | size MB |"
    lines += [
        head + "".join(f" {n} tok |" for n in seq_cols),
        "|---|---|---|---|---|---|---|" + "---|" * len(seq_cols),
    ]
    for p in r.points:
        cells = "".join(
            f" {p.seq_ratios[n]:.3f} |" if n in p.seq_ratios else " |" for n in seq_cols
        )
        lines.append(
            f"| {p.label} | {p.kind} | {p.accuracy:.4f} | "
            f"{(p.accuracy - base.accuracy) * 100:+.1f} pt | {p.ratio:.3f} | "
            f"{1 / p.ratio:.2f}x | {p.size_mb:.3f} |" + cells
        )
    lines.append("")
    if seq_cols:
        lines.append(
            f"- {', '.join(map(str, seq_cols))} tok: latency vs fp32 at that length (one "
            "interleaved pass per length, synthetic right-padded inputs)."
        )
    if r.seq_note:
        lines.append(f"- {r.seq_note}")
    lines += [f"- {n}" for n in r.hand.notes]
    if sr.prune_unsupported:
        lines.append(f"- search: {sr.prune_unsupported}")
    lines += ["", goal_line(r, s)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- main
def optimize_error(run_dir: Path) -> str:
    """The ``Error:`` line ``edgeopt optimize`` printed into its log (else its last line):
    why a search failed, e.g. a two-input model before ``optimize`` takes one."""
    log_path = run_dir.with_name(run_dir.name + ".log")
    if not log_path.is_file():
        return "(no log)"
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    return (errors or lines or ["(empty log)"])[-1][:400]


def main(argv: list[str] | None = None) -> int:
    """Build, search, build the by-hand files, measure, write the section."""
    import torch

    from edgeopt.data import load_npz
    from edgeopt.loading import load_model
    from edgeopt.onnx_export import export_onnx

    s = parse_args(argv)
    args_text = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    command = f"python benchmarks/transformer_models.py {args_text}".strip()
    t0 = time.monotonic()
    torch.set_num_threads(s.threads or 2)
    bundle, data_path = ensure_model(s)
    data = load_npz(data_path)
    loaded = load_model(bundle)
    inputs = loaded.inputs
    params = sum(p.numel() for p in loaded.module.parameters()) / 1e6
    tag = f"{s.model}-w{s.width:g}-e{s.train_epochs if s.train_epochs is not None else 'd'}"
    out = WORK / f"{tag}-s{s.seed}"
    WORK.mkdir(parents=True, exist_ok=True)
    extra = (["--threads", str(s.threads)] if s.threads else []) + list(s.optimize_args)
    log(f"{s.model} seed {s.seed}: edgeopt optimize, {s.budget_s / 60:g} min")
    search = rm.run_search(bundle, data_path, out, s.budget_s, s.seed, extra=extra)
    if search.error:
        search.error = f"{search.error}; {optimize_error(out)}"
    log(
        f"  {search.complete} complete, {search.failed} failed, {len(search.front)} on the front"
        + (f"; {search.error}" if search.error else "")
    )
    fp32 = out / "baseline" / "model.onnx"
    if not fp32.exists():
        fp32 = WORK / f"{tag}-fp32.onnx"
        shape = inputs if not inputs.is_single else inputs.first_shape
        export_onnx(loaded.module, shape, fp32, check_inputs=data.x_val[:8])
    log(f"{s.model}: by-hand recipes")
    kind = MODELS[s.model][0]
    hand = build_by_hand(bundle, fp32, kind, data, WORK / f"{tag}-byhand", s.threads or 2)
    log(f"{s.model}: measuring (one interleaved pass)")
    result = measure(search, fp32, hand, data, inputs)
    text = render(s, result, command, time.monotonic() - t0, params)
    print(text)
    if s.write:
        start = f"<!-- transformers:{tag}:s{s.seed}{':quick' if s.quick else ''}:start -->"
        write_section(start, start.replace(":start -->", ":end -->"), text)
        log("wrote its section of benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
