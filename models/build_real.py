"""Build the real example models on demand: CIFAR-size ResNet-18, MobileNetV2, ShuffleNetV2,
a ViT and a BERT-class text classifier.

Data: scikit-learn's bundled handwritten digits (nothing is downloaded), upsampled to 32x32,
replicated to 3 channels and split 60/20/20 with a fixed seed, as in ``models/build.py``;
``bert_text``: the seeded text task of ``models/text_task.py`` (``text4.npz``, 32 int64 tokens
and a mask, labels that need the token order). Models: ``edgeopt.zoo.REAL_BUILDERS`` and
``TRANSFORMER_BUILDERS`` (random init), trained with the library's own training loop
(``bert_text``: a plain torch loop here, as edgeopt's takes one float input), saved as edgeopt
bundles (``edgeopt.zoo:<name>``, ``weights_only=True``; ``bert_text``'s records its inputs
``input_ids`` and ``attention_mask``), with the bag-of-words baseline and the gate (test >= 95 %
and >= the baseline + 15 points) printed for ``bert_text``. Outputs go to ``models/real/``
(not committed: full-width training takes many CPU minutes).

    python models/build_real.py                                # all five, full width
    python models/build_real.py --models resnet18_cifar --epochs 5
    python models/build_real.py --models vit_cifar bert_text   # the two transformers
    python models/build_real.py --width 0.25 --epochs 1        # a quick end-to-end check
    python models/build_real.py --estimate 5                   # time 5 batches, no training

From an image folder (``models/build_digits_folder.py``'s layout; ``*_imagenet`` models):

    python models/build_real.py --folder /tmp/digits224 --models mobilenetv2_imagenet \
        --width 0.5 --size 224 --warm-size 112 --warm-epochs 6 --epochs 1

trains with the folder streamed (``fit`` on a ``FolderSource``, default preprocessing for the
size: resize to size/0.875, center crop, ImageNet mean/std), first ``--warm-epochs`` at
``--warm-size`` (progressive resizing: the fully-convolutional models take any size, and a
112x112 step costs ~1/10 of a 224x224 one here), then ``--epochs`` at ``--size``. Saves
``OUT/<name>_<size>.pt`` (input shape 3 x size x size) and its ``.preprocess.json``.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import text_task  # a sibling: this file runs as a script, models/ is on sys.path
import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "real"
SIZE = 32
CHANNELS = 3
BATCH = 64


class Recipe(NamedTuple):
    """How a model is trained: optimizer, learning rate, default epochs, weight decay."""

    optimizer: str
    lr: float
    epochs: int
    weight_decay: float = 5e-4


MODELS: dict[str, Recipe] = {
    "resnet18_cifar": Recipe("sgd", 0.05, 15),
    "mobilenetv2_cifar": Recipe("adamw", 0.003, 20),
    "shufflenetv2_cifar": Recipe("adamw", 0.003, 20),
    # ViT, patch 4, dim 192, depth 6, 8 heads, MLP 384 (plan 27, 3.1): ~5 s/epoch at 2 threads
    "vit_cifar": Recipe("adamw", 0.001, 60, 0.05),
}
"""Image models, trained on the digits at 3x32x32 with ``edgeopt.training.fit``."""

# hidden 128, 4 post-LN layers, 4 heads (plan 27, 3.2): ~9 s/epoch of 125 steps at 2 threads
TEXT_MODELS: dict[str, Recipe] = {"bert_text": Recipe("adamw", 0.001, 20, 0.01)}
"""Text models, trained on ``text4.npz`` by ``train_text``."""

TEXT_DATA = "text4.npz"
GATE_ACC, GATE_MARGIN = 0.95, 0.15  # bert_text: test accuracy, and points over bag-of-words

FOLDER_MODELS = ("mobilenetv2_imagenet", "resnet18_imagenet")


def build_data(path: Path, seed: int = 0) -> None:
    """Digits at SIZE x SIZE with CHANNELS identical channels: build.py's split, bigger."""
    from build import build_data as build_digits

    build_digits(path, seed, size=SIZE, channels=CHANNELS)


def estimate_epoch_s(
    model: torch.nn.Module,
    x_train: Sequence[np.ndarray],
    x_val: Sequence[np.ndarray],
    batches: int,
) -> tuple[float, float]:
    """(seconds per training step, estimated seconds per epoch) from ``batches`` timed SGD
    steps of BATCH samples (after one warm-up step) plus one timed validation pass.
    ``x_train``/``x_val``: one array per model input."""
    from torch.nn import functional as F

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = [torch.from_numpy(a[:BATCH]) for a in x_train]
    y = torch.zeros(len(x[0]), dtype=torch.long)
    model.train()
    times = []
    for i in range(batches + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(*x), y).backward()
        opt.step()
        if i:  # the first step warms up the allocator and kernels
            times.append(time.perf_counter() - t0)
    step = float(np.median(times))
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x_val[0]), 256):
            model(*(torch.from_numpy(a[i : i + 256]) for a in x_val))
    val = time.perf_counter() - t0
    return step, math.ceil(len(x_train[0]) / BATCH) * step + val


def text_inputs(arrays: dict[str, np.ndarray], split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` of one split of the text task."""
    return arrays[f"x_{split}.input_ids"], arrays[f"x_{split}.attention_mask"]


def text_accuracy(model: torch.nn.Module, arrays: dict[str, np.ndarray], split: str) -> float:
    """Accuracy of ``model`` on one split of the text task, in batches of 256."""
    ids, mask = text_inputs(arrays, split)
    y = arrays[f"y_{split}"]
    model.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(y), 256):
            logits = model(torch.from_numpy(ids[i : i + 256]), torch.from_numpy(mask[i : i + 256]))
            hits += int((logits.argmax(1).numpy() == y[i : i + 256]).sum())
    return hits / max(len(y), 1)


def train_text(
    model: torch.nn.Module,
    arrays: dict[str, np.ndarray],
    recipe: Recipe,
    epochs: int,
    seed: int,
) -> float:
    """Train ``model`` in place on the text task: AdamW, cosine over every step, batch BATCH,
    shuffled each epoch under ``seed``; keeps the weights of the best validation accuracy,
    the initial weights' included (as ``fit`` does), and returns that accuracy."""
    from torch.nn import functional as F

    ids, mask = (torch.from_numpy(a) for a in text_inputs(arrays, "train"))
    y = torch.from_numpy(arrays["y_train"])
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = max(epochs * math.ceil(len(y) / BATCH), 1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed)
    best, best_state = text_accuracy(model, arrays, "val"), copy.deepcopy(model.state_dict())
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), BATCH):
            idx = order[i : i + BATCH]
            loss = F.cross_entropy(model(ids[idx], mask[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = text_accuracy(model, arrays, "val")
        print(f"    epoch {epoch + 1}: loss {loss.item():.4f} val {acc:.4f}", flush=True)
        if acc > best:
            best, best_state = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return best


def bert_kwargs(width: float) -> dict[str, int]:
    """``bert_text``'s arguments at ``width``: hidden 128 x width (a multiple of its 4 heads),
    intermediate 4x hidden, 4 layers, vocabulary 1,024, 128 positions, the task's 4 classes."""
    hidden = max(4, round(128 * width / 4) * 4)
    kwargs = {"vocab_size": text_task.VOCAB, "max_len": 128, "hidden": hidden, "depth": 4}
    return kwargs | {"heads": 4, "intermediate": 4 * hidden, "num_classes": text_task.NUM_CLASSES}


def build_text_models(args: argparse.Namespace, names: list[str]) -> None:
    """Build the text task, then train, test and save each text model (``--estimate``:
    only time it), with the bag-of-words baseline and the gate for each."""
    from edgeopt import zoo
    from edgeopt.inputs import InputSpec, ModelInputs
    from edgeopt.loading import save_bundle

    data_path = args.out / TEXT_DATA
    arrays = text_task.write_npz(data_path, args.seed)
    sizes = {s: len(arrays[f"y_{s}"]) for s in text_task.SIZES}
    print(f"data: {data_path} {sizes} seq {text_task.SEQ_LEN}")
    bow = text_task.bow_baseline(arrays, args.seed) if not args.estimate else {}
    seq = text_task.SEQ_LEN
    for name in names:
        recipe = TEXT_MODELS[name]
        kwargs = bert_kwargs(args.width)
        torch.manual_seed(args.seed)
        model = zoo.BUILDERS[name](**kwargs)
        params = sum(p.numel() for p in model.parameters())
        if args.estimate:
            train, val = text_inputs(arrays, "train"), text_inputs(arrays, "val")
            step, epoch = estimate_epoch_s(model, train, val, args.estimate)
            print(
                f"{name} x{args.width:g} ({params / 1e6:.2f} M params): "
                f"{step * 1000:.0f} ms per batch of {BATCH}, ~{epoch:.0f} s per epoch"
            )
            continue
        epochs = recipe.epochs if args.epochs is None else args.epochs
        t0 = time.perf_counter()
        val_acc = train_text(model, arrays, recipe, epochs, args.seed)
        seconds = time.perf_counter() - t0
        test_acc = text_accuracy(model, arrays, "test")
        ids = InputSpec.of("input_ids", (seq,), "int64", vocab_size=kwargs["vocab_size"])
        inputs = ModelInputs((ids, InputSpec.of("attention_mask", (seq,), "int64")))
        out = save_bundle(
            model,
            args.out / f"{name}.pt",
            arch=f"edgeopt.zoo:{name}",
            arch_kwargs=kwargs,
            input_shape=(seq,),
            inputs=inputs,
        )
        met = test_acc >= GATE_ACC and test_acc >= bow["test"] + GATE_MARGIN
        print(
            f"  gate (test >= {GATE_ACC:.0%} and >= bag-of-words {bow['test']:.4f} + "
            f"{GATE_MARGIN * 100:.0f} pt): {'met' if met else 'NOT met'}"
        )
        print(
            f"{name} x{args.width:g} ({params / 1e6:.2f} M params): {epochs} epochs, "
            f"val {val_acc:.4f} test {test_acc:.4f} bag-of-words {bow['test']:.4f} "
            f"{seconds:.0f}s ({seconds / max(epochs, 1):.1f}s/epoch) -> {out}"
        )


FOLDER_LR = 0.003


def folder_accuracy(model: torch.nn.Module, source: object, split: str) -> float:
    """Top-1 accuracy of ``model`` on the whole ``split`` of a folder source, in batches."""
    hits = total = 0
    model.eval()
    with torch.no_grad():
        for x, y in source.batches(split, batch=128):  # type: ignore[attr-defined]
            pred = model(torch.from_numpy(x)).argmax(1).numpy()
            hits += int((pred == y).sum())
            total += len(y)
    return hits / max(total, 1)


def init_from(model: torch.nn.Module, bundle: Path) -> None:
    """Copy every tensor of ``bundle`` whose name and shape ``model`` shares (a warm-up at a
    smaller side, or the CIFAR layout of the same architecture: its strides differ, its widths
    but the last 1x1 conv's do not); say what was left at its initial value."""
    given = torch.load(bundle, weights_only=True)["state_dict"]
    own = model.state_dict()
    shared = {k: v for k, v in given.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    left = sorted(set(own) - set(shared))
    print(f"init from {bundle}: {len(shared)} of {len(own)} tensors; left as built: {left}")


def train_from_folder(args: argparse.Namespace) -> None:
    """``--folder``: train each model on the image folder, streamed, and save it."""
    from edgeopt import zoo
    from edgeopt.data.folder import FolderSource
    from edgeopt.data.metadata import write_sidecar
    from edgeopt.data.preprocess import Preprocess
    from edgeopt.loading import save_bundle
    from edgeopt.training import TrainConfig, fit

    torch.set_num_threads(args.threads)
    phases = [(args.warm_size, args.warm_epochs)] if args.warm_epochs else []
    phases.append((args.size, args.epochs if args.epochs is not None else 1))
    sources = {
        size: FolderSource(
            args.folder,
            Preprocess.default_for((CHANNELS, size, size)),
            loader_workers=args.loader_workers,
            augment=args.augment,  # a mirrored digit is another glyph: never flips
        )
        for size, _ in phases
    }
    final = sources[args.size]
    print(
        f"data: {args.folder} train {final.count('train')} val {final.count('val')} "
        f"classes {final.num_classes}; phases {phases}"
    )
    for name in args.models:
        kwargs = {
            "in_channels": CHANNELS,
            "num_classes": final.num_classes,
            "width_mult": args.width,
        }
        torch.manual_seed(args.seed)
        model = zoo.REAL_BUILDERS[name](**kwargs)
        if args.init is not None:  # continue training a bundle (e.g. a warm-up at a smaller side)
            init_from(model, args.init)
        t0 = time.perf_counter()
        for size, epochs in phases:
            cfg = TrainConfig(
                lr=args.lr,
                epochs=epochs,
                batch_size=BATCH // 2,
                optimizer="adamw",
                weight_decay=5e-4,
                schedule="cosine",
                patience=0,
            )
            t1 = time.perf_counter()
            result = fit(
                model,
                sources[size],
                cfg,
                seed=args.seed,
                on_epoch=lambda e, acc, s=size: print(
                    f"    {s}px epoch {e}: val {acc:.4f}", flush=True
                ),
            )
            print(
                f"  {name} at {size}: {epochs} epochs, val {result.best_val_accuracy:.4f} "
                f"({time.perf_counter() - t1:.0f}s, data wait {result.data_wait_s:.0f}s)",
                flush=True,
            )
        seconds = time.perf_counter() - t0
        test_acc = folder_accuracy(model, final, "test")
        out = save_bundle(
            model,
            args.out / f"{name}_{args.size}.pt",
            arch=f"edgeopt.zoo:{name}",
            arch_kwargs=kwargs,
            input_shape=final.input_shape,
        )
        write_sidecar(out, final.recipe)
        print(f"{name} x{args.width:g} at {args.size}: test {test_acc:.4f} {seconds:.0f}s -> {out}")


def build_image_models(args: argparse.Namespace, names: list[str]) -> None:
    """Build the digits at 3x32x32, then train, test and save each image model
    (``--estimate``: only time it)."""
    from edgeopt import zoo
    from edgeopt.data import load_npz
    from edgeopt.loading import save_bundle
    from edgeopt.training import TrainConfig, evaluate, fit

    data_path = args.out / "digits32.npz"
    build_data(data_path, args.seed)
    data = load_npz(data_path)
    print(
        f"data: {data_path} train {len(data.x_train)} val {len(data.x_val)} "
        f"test {len(data.x_test)} shape {data.input_shape}"
    )
    for name in names:
        recipe = MODELS[name]
        kwargs = {"in_channels": CHANNELS, "num_classes": 10, "width_mult": args.width}
        torch.manual_seed(args.seed)
        model = zoo.BUILDERS[name](**kwargs)
        params = sum(p.numel() for p in model.parameters())
        if args.estimate:
            step, epoch = estimate_epoch_s(model, [data.x_train], [data.x_val], args.estimate)
            print(
                f"{name} x{args.width:g} ({params / 1e6:.2f} M params): "
                f"{step * 1000:.0f} ms per batch of {BATCH}, ~{epoch:.0f} s per epoch"
            )
            continue
        epochs = recipe.epochs if args.epochs is None else args.epochs
        cfg = TrainConfig(
            lr=recipe.lr,
            epochs=epochs,
            batch_size=BATCH,
            optimizer=recipe.optimizer,
            weight_decay=recipe.weight_decay,
            schedule="cosine",
            patience=0,
        )
        t0 = time.perf_counter()
        result = fit(model, data, cfg, seed=args.seed)  # trains in place, keeps best weights
        seconds = time.perf_counter() - t0
        test_acc = evaluate(model, data.x_test, data.y_test)
        out = save_bundle(
            model,
            args.out / f"{name}.pt",
            arch=f"edgeopt.zoo:{name}",
            arch_kwargs=kwargs,
            input_shape=data.input_shape,
        )
        print(
            f"{name} x{args.width:g} ({params / 1e6:.2f} M params): {epochs} epochs, "
            f"val {result.best_val_accuracy:.4f} test {test_acc:.4f} "
            f"{seconds:.0f}s ({seconds / max(epochs, 1):.1f}s/epoch) -> {out}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="*",
        default=[*MODELS, *TEXT_MODELS],
        choices=[*MODELS, *TEXT_MODELS, *FOLDER_MODELS],
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs for every model (default: each model's own)",
    )
    parser.add_argument(
        "--width",
        type=float,
        default=1.0,
        help="width_mult of every model (bert_text: of its hidden size)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT, help="output folder")
    parser.add_argument(
        "--estimate",
        type=int,
        default=0,
        metavar="N",
        help="only time N training batches per model and print the estimated "
        "seconds per epoch (nothing is trained or saved)",
    )
    parser.add_argument("--folder", type=Path, default=None, help="train from this image folder")
    parser.add_argument("--size", type=int, default=224, help="--folder: input side")
    parser.add_argument("--warm-size", type=int, default=112, help="--folder: warm-up side")
    parser.add_argument("--warm-epochs", type=int, default=0, help="--folder: epochs at warm size")
    parser.add_argument("--loader-workers", type=int, default=1, help="--folder: decode workers")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--lr", type=float, default=FOLDER_LR, help="--folder: AdamW learning rate")
    parser.add_argument(
        "--augment",
        default="crop",
        choices=["crop", "none"],
        help="--folder: training augmentation",
    )
    parser.add_argument("--init", type=Path, default=None, help="--folder: start from this bundle")
    args = parser.parse_args()
    if args.folder is not None:
        train_from_folder(args)
        return

    torch.set_num_threads(args.threads)
    images = [n for n in args.models if n not in TEXT_MODELS]
    if images:
        build_image_models(args, images)
    texts = [n for n in args.models if n in TEXT_MODELS]
    if texts:
        build_text_models(args, texts)


if __name__ == "__main__":
    main()
