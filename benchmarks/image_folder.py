"""Real data at real resolution (issue 24, "Proof"): searches that read a JPEG image folder at
224x224 (or 112x112), streamed, on this 2-core CPU.

Data: ``models/build_digits_folder.py`` (scikit-learn's digits rendered as 224x224 JPEGs on
photo and gradient backgrounds; 5,000 train / 1,000 val / 1,000 test by default), built into
``benchmarks/work/`` when missing. Models: ``models/build_real.py --folder`` (trained from
the folder, streamed; ``training_recipe``), built into
``models/real/folder/`` when missing.

One PART per invocation (each writes its own section of ``benchmarks/RESULTS.md``):

``search``  ``edgeopt optimize MODEL --data FOLDER --target cpu,mobile --timeout BUDGET``
            (default MobileNetV2 x0.5 at 224, 30 min): trials complete in the budget with
            pruning active; the peak PSS of the search's process tree (sampled every second);
            the data-loading share of fine-tune time (``data_wait_s`` / fine-tune seconds,
            summed over trials); then the by-hand recipes of ``real_models.py`` (ORT int8;
            Torch-Pruning 50 % + plain fine-tune, here one epoch streamed from the folder; both)
            and ONE interleaved timing pass at 1 ORT thread: edgeopt's best within 1 pt vs the
            best by-hand within 1 pt, on the host (measured) and on ``mobile`` (estimated).
``memory``  the same short search (``--trials 3``) on the 5k folder and on a 50k one:
            peak PSS of each (goal: under 3 GB whatever the folder's size).
``throughput``  fine-tune steps (forward, backward, update; same model, same index lists)
            reading batches from the folder through edgeopt's DataLoader vs from tensors in
            memory, interleaved, median samples/s of 3 repeats each (goal: folder >= 80 %).

    python benchmarks/image_folder.py search                     # MNv2 x0.5 @224, 30 min
    python benchmarks/image_folder.py search --model resnet18_imagenet --width 0.5 \\
        --size 112 --budget 20m --targets cpu --no-by-hand          # ResNet-18 @112, CPU
    python benchmarks/image_folder.py memory
    python benchmarks/image_folder.py throughput
    python benchmarks/image_folder.py search --quick              # a check, not the proof
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_models as rm  # noqa: E402
from results_md import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "folder"
MODELS_DIR = ROOT / "models" / "real" / "folder"
BUILD_FOLDER = ROOT / "models" / "build_digits_folder.py"
MAX_PSS_GB = 3.0
MIN_THROUGHPUT = 0.80
MAX_WAIT_SHARE = 0.20
MIN_TRIALS = 10
CALIB = 128
TEST_SAMPLES = 1000
log = rm.log


# ----------------------------------------------------------------------------------- inputs
def ensure_folder(train: int, val: int = 1000, test: int = 1000, size: int = 224) -> Path:
    """The digits folder with ``train`` training images (built when missing)."""
    out = WORK / f"digits{size}-{train // 1000}k"
    if (out / "manifest.json").exists():
        return out
    cmd = [sys.executable, str(BUILD_FOLDER), "--out", str(out), "--train", str(train)]
    cmd += ["--val", str(val), "--test", str(test), "--size", str(size)]
    log(f"building {out.name}: {' '.join(shlex.quote(c) for c in cmd[1:])}")
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return out


MODEL_FILE: Path | None = None
"""``--model-file``: use this bundle instead of training one (e.g. an untrained model for the
memory part, whose figure does not depend on the weights)."""


def training_recipe(name: str, quick: bool) -> str:
    """How ``ensure_model`` trains ``name``, in words for the results."""
    if quick:
        return "one epoch at size"
    if name == "mobilenetv2_imagenet":
        return (
            "from mobilenetv2_cifar's weights on the 32 px digits but the last 1x1 conv, "
            "unaugmented, 6 epochs at 112 px, 2 at size"
        )
    return "unaugmented warm-up at 64 px, one epoch at size"


def ensure_model(name: str, width: float, size: int, folder: Path, quick: bool) -> Path:
    """The model trained from ``folder`` by ``build_real.py --folder`` (built when missing),
    or ``--model-file``."""
    if MODEL_FILE is not None:
        return MODEL_FILE
    tag = f"w{width:g}" + ("-quick" if quick else "")
    out = MODELS_DIR / tag
    model = out / f"{name}_{size}.pt"
    if model.exists():
        return model
    # From scratch on this folder, random-resized-crop augmentation at lr 3e-3 stayed at chance
    # (ResNet-18 for 3 epochs at 64, MobileNetV2 for 16 at 32); unaugmented AdamW 1e-3 at 64 px
    # learns (ResNet-18 x0.5: val 0.13 -> 0.78 in 8 epochs), then one epoch at the model's size.
    warm = min(64, size)
    epochs = ["--warm-epochs", "0", "--epochs", "1"] if quick else ["--warm-epochs", "8"]
    if name == "mobilenetv2_imagenet" and not quick:
        # MobileNetV2 x0.5 stayed at chance after 8 such epochs (test 0.10); started from its
        # CIFAR layout trained on the 32 px digits (all but the last 1x1 conv, whose width the
        # layouts scale differently: a user's pretrained backbone) it left chance: val 0.20
        # after 4 epochs at 64 px, 0.30 after one more at 224. It learns at 112 and up.
        cifar, _ = rm.ensure_model("mobilenetv2_cifar", width, None)
        warm = min(112, size)
        epochs = ["--init", str(cifar), "--warm-epochs", "6", "--epochs", "2"]
    epochs += ["--lr", "0.001", "--augment", "none"]
    cmd = [sys.executable, str(rm.BUILD_REAL), "--folder", str(folder), "--models", name]
    cmd += ["--width", f"{width:g}", "--size", str(size), "--warm-size", str(warm)]
    cmd += [*epochs, "--out", str(out)]
    log(f"training {name}: {' '.join(shlex.quote(c) for c in cmd[1:])}")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0 or not model.exists():
        raise RuntimeError(f"build_real.py --folder failed:\n{proc.stdout}\n{proc.stderr}")
    log(f"  {proc.stdout.strip().splitlines()[-1]} ({time.monotonic() - t0:.0f}s)")
    return model


# ----------------------------------------------------------------------------------- memory
@dataclass
class PeakPss:
    """The peak over time of the summed PSS of a process and its descendants."""

    peak_bytes: int = 0
    peak_processes: int = 0
    samples: int = 0
    at_peak: list[tuple[str, int]] = field(default_factory=list)
    """(process role, PSS bytes) of each process at the peak, largest first."""
    peak_s: float = 0.0
    """Seconds into the search at the peak."""
    peak_stages: str = ""
    """The running trials' stages at the peak (``trials/*/stage.txt``)."""
    timeline: Path | None = None
    """Where each sample goes (CSV: seconds, total and per-role GB, running stages)."""
    run_dir: Path | None = None

    def watch(self, proc: subprocess.Popen[bytes], every_s: float = 1.0) -> None:
        """Sample until ``proc`` exits."""
        root = psutil.Process(proc.pid)
        t0 = time.monotonic()
        out = self.timeline.open("w") if self.timeline else None
        if out:
            out.write("t_s,total_gb,roles_gb,stages\n")
        while proc.poll() is None:
            parts: list[tuple[str, int]] = []
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                tree = []
            for p in tree:
                try:
                    parts.append((role(p, root), p.memory_full_info().pss))
                except psutil.Error:
                    continue
            total = sum(b for _, b in parts)
            t = time.monotonic() - t0
            stages = running_stages(self.run_dir)
            if total > self.peak_bytes:
                self.peak_bytes, self.peak_processes = total, len(parts)
                self.at_peak = sorted(parts, key=lambda rb: -rb[1])
                self.peak_s, self.peak_stages = t, stages
            if out:
                roles = " ".join(f"{n}={b / 2**30:.2f}" for n, b in parts)
                out.write(f"{t:.0f},{total / 2**30:.3f},{roles},{stages}\n")
                out.flush()
            self.samples += 1
            time.sleep(every_s)
        if out:
            out.close()

    @property
    def gb(self) -> float:
        return self.peak_bytes / 2**30

    @property
    def breakdown(self) -> str:
        """e.g. ``trial 2.10 + search 0.85 + loader 0.20`` (GB at the peak)."""
        return " + ".join(f"{name} {b / 2**30:.2f}" for name, b in self.at_peak)


def running_stages(run_dir: Path | None) -> str:
    """``N:stage`` of each running trial (a stage file, no result yet), or '' (a search
    between trials: set-up, the final measurement)."""
    if run_dir is None:
        return ""
    found = []
    for f in (run_dir / "trials").glob("*/stage.txt"):
        try:
            if not f.parent.joinpath("result.json").exists():
                found.append(f"{f.parent.name}:{f.read_text().strip()}")
        except OSError:
            continue
    return ";".join(sorted(found))


def role(p: psutil.Process, root: psutil.Process) -> str:
    """What a process of the search's tree is: the search itself, a trial child, a timing
    child, a data-loader worker, or its name."""
    if p.pid == root.pid:
        return "search"
    cmd = " ".join(p.cmdline())
    for key, name in (
        ("measure.child", "timing"),
        ("multiprocessing", "spawned"),
        ("trial.builder", "trial"),
        ("run.loop", "worker"),
    ):
        if key in cmd and (name != "trial" or "trial.builder" not in parent_cmd(p)):
            return name
    return "loader" if "trial.builder" in cmd else p.name()


def parent_cmd(p: psutil.Process) -> str:
    """The command line of ``p``'s parent ('' when gone): a DataLoader worker is a fork of
    the trial builder and shares its command line."""
    try:
        parent = p.parent()
        return " ".join(parent.cmdline()) if parent is not None else ""
    except psutil.Error:
        return ""


def watch_in_thread(peak: PeakPss) -> Any:
    """A ``run_search`` watch that samples in a thread, so the caller's wait has a timeout."""

    def start(proc: subprocess.Popen[bytes]) -> None:
        threading.Thread(target=peak.watch, args=(proc,), daemon=True).start()

    return start


# ----------------------------------------------------------------------------------- search
def fine_tune_shares(run_dir: Path) -> tuple[float, float, int]:
    """(seconds blocked waiting for batches, fine-tune seconds, fine-tunes) over the run."""
    from edgeopt.search.run.collect import load_run

    wait = total = 0.0
    n = 0

    def walk(node: Any) -> None:
        nonlocal wait, total, n
        if isinstance(node, dict):
            for key, value in node.items():  # "finetune.train_result", "qat.train_result"
                if key.endswith("train_result") and isinstance(value, dict):
                    wait += float(value.get("data_wait_s") or 0.0)
                    total += float(value.get("seconds") or 0.0)
                    n += 1
                else:
                    walk(value)

    for t in load_run(run_dir)["trials"]:
        walk(t.get("info") or {})
    return wait, total, n


@dataclass
class Scoring:
    """The test split decoded once (what every model is scored on), a calibration subset
    of the training split, and one validation sample for timing."""

    x_test: np.ndarray
    y_test: np.ndarray
    x_train: np.ndarray
    x_val: np.ndarray
    source: Any = field(repr=False, default=None)


def scoring_data(folder: Path, model: Path) -> Scoring:
    """Decode the test split (up to TEST_SAMPLES), CALIB training images and 8 val images
    with the model's preprocessing (its sidecar, else the default for its input)."""
    from edgeopt.data.folder import FolderSource
    from edgeopt.data.preprocess import Preprocess
    from edgeopt.loading import load_model

    shape = tuple(load_model(model).input_shape)
    src = FolderSource(folder, Preprocess.default_for(shape))
    x_test, y_test = src.subset("test", TEST_SAMPLES, seed=0)
    x_train, _ = src.subset("train", CALIB, seed=0)
    x_val, _ = src.subset("val", 8, seed=0)
    return Scoring(x_test, y_test, x_train, x_val, src)


def fine_tune_streamed(net: Any, source: Any, seed: int = 0) -> None:
    """By-hand plain fine-tuning, streamed: one epoch of ``source``'s training split in a
    seeded order, SGD (lr FT_LR, momentum 0.9), cosine, batch 32, cross-entropy."""
    import torch
    from torch.nn import functional as F

    torch.manual_seed(seed)
    batch = 32
    steps = math.ceil(source.count("train") / batch)
    opt = torch.optim.SGD(net.parameters(), lr=rm.FT_LR, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    net.train()
    for x, y in source.batches("train", n=source.count("train"), seed=seed, batch=batch):
        if len(y) < 2:
            continue
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
        sched.step()
    net.eval()


def by_hand(model: Path, fp32: Path, data: Scoring, out: Path) -> rm.ByHand:
    """real_models' recipes (a)-(c), the fine-tune streamed from the folder (one epoch)."""
    import torch

    from edgeopt.onnx_export import export_onnx

    out.mkdir(parents=True, exist_ok=True)
    hand = rm.ByHand()
    t0 = time.monotonic()
    rm._add_int8(hand, rm.LABEL_INT8, fp32, out / "int8.onnx", data.x_train)
    log(f"  by hand: int8 in {time.monotonic() - t0:.0f}s")
    pruned = out / "pruned.pt"
    ok, msg = rm.tp_attempt(model, (), pruned)
    if not ok:
        hand.notes.append(f"by hand: TP fails: {msg}")
        return hand
    hand.notes.append(f"Torch-Pruning, classifier ignored: {msg}")
    t0 = time.monotonic()
    torch.set_num_threads(2)
    net = torch.load(pruned, weights_only=False)  # our own child's file
    fine_tune_streamed(net, data.source)
    shape = tuple(int(d) for d in data.x_train.shape[1:])
    onnx_path = export_onnx(net, shape, out / "pruned_ft.onnx", check_inputs=data.x_val[:4])
    label = f"TP {rm.PRUNE_RATIO:.0%} L2 + 1 ep FT streamed (fp32)"
    hand.variants.append((label, onnx_path))
    log(f"  by hand: pruned + fine-tuned + exported in {time.monotonic() - t0:.0f}s")
    both = f"TP {rm.PRUNE_RATIO:.0%} L2 + 1 ep FT + int8 u8/s8"
    rm._add_int8(hand, both, onnx_path, out / "pruned_ft_int8.onnx", data.x_train)
    return hand


def estimated_ms(path: Path, profile: str) -> float:
    """The cost model's latency of ``path`` on ``profile`` (an estimate, never measured)."""
    from edgeopt.estimate.cost_model import estimate
    from edgeopt.profiles import load_profile

    return estimate(path, load_profile(profile)).latency_ms


def part_search(a: argparse.Namespace) -> str:
    """The ``search`` part: one search, its memory and data share, by hand, one timing pass."""
    from edgeopt.config import parse_duration
    from edgeopt.loading import load_model

    budget = parse_duration(a.budget)
    folder = ensure_folder(a.train, size=224)
    model = ensure_model(a.model, a.width, a.size, folder, a.quick)
    params = sum(p.numel() for p in load_model(model).module.parameters()) / 1e6
    out = WORK / f"search-{a.model}-w{a.width:g}-{a.size}" / "run"
    out.parent.mkdir(parents=True, exist_ok=True)
    peak = PeakPss(timeline=out.parent / "pss.csv", run_dir=out)
    extra = ["--augment", "crop", *a.optimize_args]  # a mirrored digit is another glyph
    log(f"search: {a.model} x{a.width:g} at {a.size}, --target {a.targets}, {a.budget}")
    search = rm.run_search(
        model, folder, out, budget, a.seed, targets=a.targets, extra=extra,
        watch=watch_in_thread(peak),
    )  # fmt: skip
    log(
        f"  {search.complete} complete ({search.in_budget} in budget), {search.stopped} "
        f"stopped, {search.failed} failed, {search.wall_s / 60:.1f} min, peak PSS "
        f"{peak.gb:.2f} GB" + (f"; {search.error}" if search.error else "")
    )
    wait, ft_s, n_ft = fine_tune_shares(out)
    lines = [
        f"### search: {a.model} x{a.width:g} at 3x{a.size}x{a.size} ({params:.2f} M params), "
        f"`--target {a.targets}`, {a.budget}",
        "",
        f"- trials complete in the budget: **{search.in_budget}** (all complete "
        f"{search.complete}; stopped early {search.stopped}; failed {search.failed}); last "
        f"ended at {search.last_end_min:.1f} min; search wall {search.wall_s / 60:.1f} min; "
        f"pruning active: {'yes' if search.pruning_active else 'no'}"
        + (f"; error: {search.error}" if search.error else ""),
        f"- peak PSS of the search's process tree: **{peak.gb:.2f} GB** "
        f"({peak.peak_processes} processes at the peak, {peak.samples} samples) at "
        f"{peak.peak_s / 60:.1f} min, trials running: {peak.peak_stages or 'none'}; GB each: "
        f"{peak.breakdown} (every sample: `{out.parent.relative_to(ROOT)}/pss.csv`)",
        f"- data-loading share of fine-tune time: **{wait / ft_s:.1%}** "
        f"({wait:.0f} s blocked on batches of {ft_s:.0f} s in {n_ft} fine-tunes)"
        if ft_s
        else "- data-loading share: no fine-tune ran",
    ]
    if a.no_by_hand or not search.front:
        lines += ["", goals_line(a, search, peak, wait, ft_s, None)]
        return "\n".join(lines)
    fp32 = out / "baseline" / "model.onnx"
    data = scoring_data(folder, model)
    log("by-hand recipes")
    hand = by_hand(model, fp32, data, out.parent / "byhand")
    log("measuring (one interleaved pass)")
    r = rm.measure(search, fp32, hand, data)  # type: ignore[arg-type]
    lines += ["", *measured_table(r, a.targets)]
    lines += [f"- {n}" for n in hand.notes]
    lines += ["", goals_line(a, search, peak, wait, ft_s, r)]
    return "\n".join(lines)


def measured_table(r: rm.SeedResult, targets: str) -> list[str]:
    """Every point: test accuracy (ORT), size, host ratio (measured), mobile (estimated)."""
    mobile = "mobile" in targets.split(",")
    head = "| model | kind | test | vs fp32 | size MB | host latency / fp32 (measured) |"
    rule = "|---|---|---|---|---|---|"
    if mobile:
        head += " mobile ms (estimated) |"
        rule += "---|"
    rows = [head, rule]
    for p in r.points:
        row = (
            f"| {p.label} | {p.kind} | {p.test_accuracy:.1%} | {rm._pt(p, r.base)} | "
            f"{p.size_mb:.2f} | {p.ratio:.3f}x (cv {p.ratio_cv:.2f}) |"
        )
        if mobile:
            row += f" {estimated_ms(p.path, 'mobile'):.2f} |"
        rows.append(row)
    e, h = r.edgeopt, r.hand
    rows += [
        "",
        f"fp32 p50 {r.fp32_ms:.2f} ms at 1 ORT thread (host load {r.load}); best within 1 pt: "
        f"edgeopt {e.label if e else 'none'}; by hand {h.label if h else 'none (fp32)'}; "
        f"**edgeopt / by hand {r.hand_ratio:.2f}x** on the host (measured)",
    ]
    if mobile and e is not None:
        # on mobile each side ships its own best within 1 pt there, not the host's pick
        ms = {p.path: estimated_ms(p.path, "mobile") for p in r.points}
        em = rm.best_within(r.points, "edgeopt", lambda p: ms[p.path]) or e
        hm = rm.best_within(r.points, "by hand", lambda p: ms[p.path]) or r.base
        rows[-1] += (
            f"; on mobile (estimated; each side's best within 1 pt there: {em.label} vs "
            f"{hm.label}) **{ms[hm.path] / ms[em.path]:.2f}x**"
        )
    return rows


def goals_line(
    a: argparse.Namespace,
    search: rm.SearchOutcome,
    peak: PeakPss,
    wait: float,
    ft_s: float,
    r: rm.SeedResult | None,
) -> str:
    """The issue's goals for this part, met or not (only for the full configuration)."""
    checks = [
        f">= {MIN_TRIALS} trials: {search.in_budget >= MIN_TRIALS}",
        f"pruning active: {search.pruning_active}",
        f"peak PSS < {MAX_PSS_GB:g} GB: {peak.gb < MAX_PSS_GB}",
        f"data share <= {MAX_WAIT_SHARE:.0%}: {ft_s > 0 and wait / ft_s <= MAX_WAIT_SHARE}",
    ]
    if r is not None:
        checks.append(f"a best within 1 pt: {r.edgeopt is not None}")
        checks.append(f"edgeopt >= by hand: {r.hand_ratio >= 1.0}")
    met = all(c.endswith("True") for c in checks) and search.error is None
    if a.quick:
        return f"Goals ({'; '.join(checks)}): quick check, not the proof"
    return f"Goals ({'; '.join(checks)}): **{'met' if met else 'not met'}**"


# ----------------------------------------------------------------------------------- memory
def part_memory(a: argparse.Namespace) -> str:
    """The same short search on the 5k and the 50k folder: peak PSS of each."""
    rows = [
        "### memory: the same short search on 5k and 50k training images",
        "",
        "| training images | folder GB | trials complete | search wall | peak PSS (tree) | "
        "processes at peak (GB each) |",
        "|---|---|---|---|---|---|",
    ]
    model = ensure_model(a.model, a.width, a.size, ensure_folder(a.train, size=224), a.quick)
    ok = True
    for n in a.memory_sizes:
        folder = ensure_folder(n, size=224)
        gb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**30
        out = WORK / f"memory-{n // 1000}k" / "run"
        out.parent.mkdir(parents=True, exist_ok=True)
        peak = PeakPss()
        extra = ["--trials", str(a.memory_trials), "--augment", "crop", *a.optimize_args]
        log(f"memory: {n} images, {a.memory_trials} trials")
        s = rm.run_search(
            model, folder, out, 1800.0, a.seed, targets="cpu", extra=extra,
            watch=watch_in_thread(peak),
        )  # fmt: skip
        ok = ok and peak.gb < MAX_PSS_GB and s.error is None
        rows.append(
            f"| {n:,} | {gb:.2f} | {s.complete} | {s.wall_s / 60:.1f} min | {peak.gb:.2f} GB | "
            f"{peak.peak_processes}: {peak.breakdown} |" + (f" {s.error}" if s.error else "")
        )
    rows += [
        "",
        f"Goal (peak PSS < {MAX_PSS_GB:g} GB at every size): **{'met' if ok else 'not met'}**",
    ]
    return "\n".join(rows)


# ----------------------------------------------------------------------------------- throughput
def part_throughput(a: argparse.Namespace) -> str:
    """Folder-streamed vs in-memory fine-tune steps, interleaved."""
    import torch
    from torch.nn import functional as F

    from edgeopt.data.folder import FolderSource
    from edgeopt.data.loader import loader_for
    from edgeopt.data.preprocess import Preprocess
    from edgeopt.loading import load_model

    torch.set_num_threads(a.threads)
    folder = ensure_folder(a.train, size=224)
    model_path = ensure_model(a.model, a.width, a.size, folder, a.quick)
    loaded = load_model(model_path)
    src = FolderSource(folder, Preprocess.default_for(tuple(loaded.input_shape)))
    n = a.steps * a.batch
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(src.count("train"), generator=gen)[:n]
    batches = list(order.split(a.batch))
    log(f"throughput: decoding {n} images into memory")
    x_mem, y_mem = src.take("train", order.tolist())
    xt, yt = torch.from_numpy(x_mem), torch.from_numpy(y_mem)
    pos = {int(i): k for k, i in enumerate(order.tolist())}

    def steps(kind: str) -> tuple[float, float]:
        net = load_model(model_path).module
        opt = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
        net.train()
        loader = loader_for(src, "train", a.loader_workers) if kind == "folder" else None
        it = iter(loader.epoch(batches)) if loader is not None else None
        wait = 0.0
        t0 = time.perf_counter()
        for b in batches:
            t1 = time.perf_counter()
            if it is not None:
                x, y = next(it)
            else:
                rows = torch.tensor([pos[int(i)] for i in b])
                x, y = xt[rows], yt[rows]
            wait += time.perf_counter() - t1
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
        seconds = time.perf_counter() - t0
        return n / seconds, wait / seconds

    steps("memory")  # warm-up: allocator, kernels, page cache of the files
    steps("folder")
    rates: dict[str, list[float]] = {"folder": [], "memory": []}
    waits: list[float] = []
    for rep in range(a.repeats):
        for kind in ("folder", "memory") if rep % 2 == 0 else ("memory", "folder"):
            rate, share = steps(kind)
            rates[kind].append(rate)
            if kind == "folder":
                waits.append(share)
            log(f"  {kind}: {rate:.1f} samples/s")
    f, m = float(np.median(rates["folder"])), float(np.median(rates["memory"]))
    ratio = f / m
    return "\n".join(
        [
            f"### throughput: fine-tune steps from the folder vs from memory "
            f"({a.model} x{a.width:g} at {a.size}, batch {a.batch}, {a.steps} steps, "
            f"{a.threads} torch threads, {a.loader_workers} loader worker(s))",
            "",
            "| source | samples/s (median of " + str(a.repeats) + ") | each |",
            "|---|---|---|",
            f"| folder (JPEG decoded per step) | {f:.1f} | "
            + ", ".join(f"{v:.1f}" for v in rates["folder"])
            + " |",
            f"| in-memory tensors | {m:.1f} | "
            + ", ".join(f"{v:.1f}" for v in rates["memory"])
            + " |",
            "",
            f"folder / memory **{ratio:.0%}**; time blocked waiting for a folder batch "
            f"{float(np.median(waits)):.1%} of the steps' time. Goal (>= {MIN_THROUGHPUT:.0%}): "
            f"**{'met' if ratio >= MIN_THROUGHPUT else 'not met'}**",
        ]
    )


# ----------------------------------------------------------------------------------- main
PARTS = {"search": part_search, "memory": part_memory, "throughput": part_throughput}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; ``--quick`` shrinks every size (a check that the script runs)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=list(PARTS))
    ap.add_argument("--model", default="mobilenetv2_imagenet")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--size", type=int, default=224, help="model input side")
    ap.add_argument("--train", type=int, default=5000, help="training images of the folder")
    ap.add_argument("--budget", default="30m")
    ap.add_argument("--targets", default="cpu,mobile")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-by-hand", action="store_true", help="search part: skip by hand")
    ap.add_argument("--memory-sizes", type=int, nargs="*", default=[5000, 50000])
    ap.add_argument("--memory-trials", type=int, default=3)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--loader-workers", type=int, default=1)
    ap.add_argument(
        "--optimize-args", default="", help="more `edgeopt optimize` arguments (one string)"
    )
    ap.add_argument("--model-file", type=Path, default=None, help="use this model bundle")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    a.optimize_args = shlex.split(a.optimize_args)
    if a.quick:
        a.width, a.size, a.train = 0.25, 64, 300
        a.budget, a.memory_sizes, a.memory_trials = "2m", [300, 600], 2
        a.steps, a.repeats = 4, 1
    return a


def main(argv: list[str] | None = None) -> int:
    """Run one part, print its section and write it to RESULTS.md."""
    from edgeopt.measure.runtime import host_description

    global MODEL_FILE
    a = parse_args(argv)
    MODEL_FILE = a.model_file
    args_text = " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    t0 = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    body = PARTS[a.part](a)
    minutes = (time.monotonic() - t0) / 60
    load = ", ".join(f"{v:.2f}" for v in psutil.getloadavg())
    text = "\n".join(
        [
            f"## Image folder at real resolution (benchmarks/image_folder.py {a.part})"
            + (": quick check, not the proof" if a.quick else ""),
            "",
            f"- date: {dt.date.today().isoformat()}; command: `python benchmarks/image_folder.py "
            f"{args_text}`; runtime {minutes:.1f} min; load average at the end {load}",
            f"- machine: {host_description()}",
            "- data: models/build_digits_folder.py (JPEG digits at 224x224 on photo/gradient "
            "backgrounds, 10 classes); "
            + (
                f"model: `{a.model_file}` as given (--model-file)"
                if a.model_file is not None
                else "model trained from the folder by models/build_real.py --folder "
                f"(streamed; {training_recipe(a.model, a.quick)})"
            )
            + ". Every latency is measured on this host except the 'mobile' column "
            "(estimated from the profile).",
            "",
            body,
        ]
    )
    print(text)
    if not a.no_write:
        tag = f"{a.part}:{a.model}:w{a.width:g}:{a.size}" + (":quick" if a.quick else "")
        write_section(
            f"<!-- image_folder:{tag}:start -->", f"<!-- image_folder:{tag}:end -->", text
        )
        log("wrote its section of benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
