"""Rebuild the bundled example data and models end to end.

Data: scikit-learn's handwritten digits (1,797 8x8 images that ship inside the scikit-learn
package: nothing is downloaded), upsampled to 16x16 so the models have real compute, split
60/20/20 into train/val/test with a fixed seed. Models: one per family in ``edgeopt.zoo``
(plain CNN, residual CNN, depthwise-separable CNN), trained with the library's own training
loop and saved as edgeopt bundles (state_dict + architecture reference + input shape),
loadable with ``torch.load(weights_only=True)``.

    python models/build.py            # writes models/digits.npz and models/*.pt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SIZE = 16

# name -> (zoo builder, kwargs, epochs)
MODELS: dict[str, tuple[str, dict[str, int], int]] = {
    "plain_cnn": ("plain_cnn", {"width": 16}, 20),
    "resnet_small": ("resnet_small", {"width": 16, "blocks": 2}, 20),
    "mobilenet_small": ("mobilenet_small", {"width": 16, "expand": 4}, 25),
}


def build_data(path: Path, seed: int = 0, *, size: int = SIZE, channels: int = 1) -> None:
    """Digits upsampled to ``size`` x ``size`` with ``channels`` identical channels,
    standardized, split 60/20/20 under ``seed``, as an edgeopt ``.npz``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).repeat(1, channels, 1, 1).numpy().astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        x_train=x[:n_train],
        y_train=y[:n_train],
        x_val=x[n_train : n_train + n_val],
        y_val=y[n_train : n_train + n_val],
        x_test=x[n_train + n_val :],
        y_test=y[n_train + n_val :],
    )


def main() -> None:
    from edgeopt import zoo
    from edgeopt.data import load_npz
    from edgeopt.loading import save_bundle
    from edgeopt.training import TrainConfig, evaluate, fit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=list(MODELS), help="models to rebuild")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(2)
    data_path = HERE / "digits.npz"
    build_data(data_path, args.seed)
    data = load_npz(data_path)
    print(
        f"data: {data_path.name} train {len(data.x_train)} val {len(data.x_val)} "
        f"test {len(data.x_test)} shape {data.input_shape}"
    )
    for name in args.only:
        builder, kwargs, epochs = MODELS[name]
        torch.manual_seed(args.seed)
        model = getattr(zoo, builder)(in_channels=1, num_classes=10, **kwargs)
        t0 = time.perf_counter()
        cfg = TrainConfig(
            lr=0.05,
            epochs=epochs,
            batch_size=64,
            optimizer="sgd",
            weight_decay=5e-4,
            schedule="cosine",
            patience=0,
        )
        result = fit(model, data, cfg, seed=args.seed)  # trains in place, keeps best weights
        test_acc = evaluate(model, data.x_test, data.y_test)
        out = HERE / f"{name}.pt"
        save_bundle(
            model,
            out,
            arch=f"edgeopt.zoo:{builder}",
            arch_kwargs={"in_channels": 1, "num_classes": 10, **kwargs},
            input_shape=data.input_shape,
        )
        print(
            f"{name}: val {result.best_val_accuracy:.4f} test {test_acc:.4f} "
            f"({time.perf_counter() - t0:.0f}s) -> {out.relative_to(HERE.parent)}"
        )


if __name__ == "__main__":
    main()
