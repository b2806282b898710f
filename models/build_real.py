"""Build the real example models on demand: CIFAR-size ResNet-18, MobileNetV2, ShuffleNetV2.

Data: scikit-learn's bundled handwritten digits (nothing is downloaded), upsampled to 32x32,
replicated to 3 channels and split 60/20/20 with a fixed seed, as in ``models/build.py``.
Models: ``edgeopt.zoo.REAL_BUILDERS``, trained with the library's own training loop and
saved as edgeopt bundles (``edgeopt.zoo:<name>``, loadable with ``weights_only=True``).
Outputs go to ``models/real/`` (not committed: full-width training takes many CPU minutes).

    python models/build_real.py                                # all three, full width
    python models/build_real.py --models resnet18_cifar --epochs 5
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
import math
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "real"
SIZE = 32
CHANNELS = 3
BATCH = 64

# name -> (optimizer, learning rate, default epochs)
MODELS: dict[str, tuple[str, float, int]] = {
    "resnet18_cifar": ("sgd", 0.05, 15),
    "mobilenetv2_cifar": ("adamw", 0.003, 20),
    "shufflenetv2_cifar": ("adamw", 0.003, 20),
}

FOLDER_MODELS = ("mobilenetv2_imagenet", "resnet18_imagenet")


def build_data(path: Path, seed: int = 0) -> None:
    """Digits at SIZE x SIZE with CHANNELS identical channels: build.py's split, bigger."""
    from build import build_data as build_digits

    build_digits(path, seed, size=SIZE, channels=CHANNELS)


def estimate_epoch_s(
    model: torch.nn.Module, x_train: np.ndarray, x_val: np.ndarray, batches: int
) -> tuple[float, float]:
    """(seconds per training step, estimated seconds per epoch) from ``batches`` timed SGD
    steps of BATCH samples (after one warm-up step) plus one timed validation pass."""
    from torch.nn import functional as F

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.from_numpy(x_train[:BATCH])
    y = torch.zeros(len(x), dtype=torch.long)
    model.train()
    times = []
    for i in range(batches + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if i:  # the first step warms up the allocator and kernels
            times.append(time.perf_counter() - t0)
    step = float(np.median(times))
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x_val), 256):
            model(torch.from_numpy(x_val[i : i + 256]))
    val = time.perf_counter() - t0
    return step, math.ceil(len(x_train) / BATCH) * step + val


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
            model.load_state_dict(torch.load(args.init, weights_only=True)["state_dict"])
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


def main() -> None:
    from edgeopt import zoo
    from edgeopt.data import load_npz
    from edgeopt.loading import save_bundle
    from edgeopt.training import TrainConfig, evaluate, fit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="*", default=list(MODELS), choices=[*MODELS, *FOLDER_MODELS]
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs for every model (default: each model's own)",
    )
    parser.add_argument("--width", type=float, default=1.0, help="width_mult of every model")
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
    data_path = args.out / "digits32.npz"
    build_data(data_path, args.seed)
    data = load_npz(data_path)
    print(
        f"data: {data_path} train {len(data.x_train)} val {len(data.x_val)} "
        f"test {len(data.x_test)} shape {data.input_shape}"
    )
    for name in args.models:
        optimizer, lr, default_epochs = MODELS[name]
        kwargs = {"in_channels": CHANNELS, "num_classes": 10, "width_mult": args.width}
        torch.manual_seed(args.seed)
        model = zoo.REAL_BUILDERS[name](**kwargs)
        params = sum(p.numel() for p in model.parameters())
        if args.estimate:
            step, epoch = estimate_epoch_s(model, data.x_train, data.x_val, args.estimate)
            print(
                f"{name} x{args.width:g} ({params / 1e6:.2f} M params): "
                f"{step * 1000:.0f} ms per batch of {BATCH}, ~{epoch:.0f} s per epoch"
            )
            continue
        epochs = default_epochs if args.epochs is None else args.epochs
        cfg = TrainConfig(
            lr=lr,
            epochs=epochs,
            batch_size=BATCH,
            optimizer=optimizer,
            weight_decay=5e-4,
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


if __name__ == "__main__":
    main()
