"""Preprocessing as data: the recipe that turns an image file into a model input, recorded so
that a deployed app can repeat it exactly.

The geometry follows torchvision's ``Resize(int)`` + ``CenterCrop`` on PIL images (the
formulas are in ``resized_size`` and ``crop_box``, and in words in ``Preprocess.formula``);
the numbers follow ``ToTensor`` + ``Normalize``. Decoding and the PIL calls live in
``edgeopt.data.images``; this module is pure arithmetic, so a recipe can be parsed, checked and
written without Pillow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from edgeopt.errors import ConfigError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
GRAY_MEAN: tuple[float] = (0.5,)
GRAY_STD: tuple[float] = (0.5,)
CROP_FRACTION = 0.875
"""Default resize = crop / 0.875 (224 -> 256), the usual ImageNet evaluation recipe."""
SCHEMA_VERSION = 1


class Channels(StrEnum):
    """Channel layout of the model input: RGB or BGR (3 channels) or gray (1)."""

    RGB = "rgb"
    BGR = "bgr"
    GRAY = "gray"

    @property
    def count(self) -> int:
        return 1 if self is Channels.GRAY else 3


class Interpolation(StrEnum):
    """Resampling filter of the resize (PIL's, as torchvision uses on PIL images)."""

    BILINEAR = "bilinear"


class Named(StrEnum):
    """Recipes known by name; a named recipe's numbers must be that name's numbers."""

    IMAGENET = "imagenet"


def _ints(value: Any, what: str) -> tuple[int, ...]:
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if not items or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items):
        raise ConfigError(
            f"preprocess {what} must be positive whole numbers, not {value!r}",
            hint=f"e.g. {what} 224",
        )
    return tuple(items)


def _floats(value: Any, what: str) -> tuple[float, ...]:
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if not items or any(isinstance(v, bool) or not isinstance(v, int | float) for v in items):
        raise ConfigError(
            f"preprocess {what} must be numbers, one per channel, not {value!r}",
            hint=f"e.g. {what} 0.5,0.5,0.5 (or 'imagenet')",
        )
    out = tuple(float(v) for v in items)
    if not all(math.isfinite(v) for v in out):
        raise ConfigError(f"preprocess {what} must be finite numbers, not {value!r}")
    return out


@dataclass(frozen=True)
class Preprocess:
    """How one image file becomes one ``(C, H, W)`` float32 model input.

    decode -> ``channels`` (gray: PIL ``convert("L")``; rgb/bgr: ``convert("RGB")``, bgr then
    reverses the channel axis) -> resize the shorter side to ``resize`` (None: no resize) ->
    center crop ``crop`` (h, w) -> ``x * scale`` -> ``(x - mean) / std`` per channel -> CHW.
    Validated at construction (ConfigError, exit 2); ``check(input_shape)`` checks it against
    a model. ``named`` labels a well-known recipe ("imagenet") whose numbers it must hold.
    """

    crop: tuple[int, int]
    resize: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: Channels = Channels.RGB
    scale: float = 1 / 255
    interpolation: Interpolation = Interpolation.BILINEAR
    exif_transpose: bool = False
    named: Named | None = None

    def __post_init__(self) -> None:
        crop = _ints(self.crop, "crop")
        if len(crop) == 1:
            crop = (crop[0], crop[0])
        if len(crop) != 2:
            raise ConfigError(f"preprocess crop is (height, width), not {self.crop!r}")
        object.__setattr__(self, "crop", crop)
        if self.resize is not None:
            (resize,) = _ints(self.resize, "resize")
            if resize < max(crop):
                # torchvision would pad with black; a recipe that pads every image is a mistake
                raise ConfigError(
                    f"preprocess resize {resize} is smaller than the crop {crop[0]}x{crop[1]}",
                    hint=f"resize to at least {max(crop)} (default {default_resize(crop)})",
                )
            object.__setattr__(self, "resize", resize)
        try:
            channels = Channels(self.channels)
            interp = Interpolation(self.interpolation)
            named = None if self.named is None else Named(self.named)
        except ValueError as e:
            raise ConfigError(
                f"preprocess: {e}",
                hint="channels: rgb, bgr or gray; interpolation: bilinear; named: imagenet",
            ) from None
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "interpolation", interp)
        object.__setattr__(self, "named", named)
        mean, std = _floats(self.mean, "mean"), _floats(self.std, "std")
        for what, vals in (("mean", mean), ("std", std)):
            if len(vals) != channels.count:
                raise ConfigError(
                    f"preprocess {what} has {len(vals)} values for {channels.count} "
                    f"channel(s) ({channels.value})",
                    hint=f"give one {what} per channel",
                )
        if any(s <= 0 for s in std):
            raise ConfigError(f"preprocess std must be positive, not {std}")
        if not (isinstance(self.scale, int | float) and 0 < float(self.scale) < float("inf")):
            raise ConfigError(f"preprocess scale must be a positive number, not {self.scale!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "scale", float(self.scale))
        if not isinstance(self.exif_transpose, bool):
            raise ConfigError("preprocess exif_transpose must be true or false")
        if named is Named.IMAGENET and (
            channels is Channels.GRAY or (mean, std) != (IMAGENET_MEAN, IMAGENET_STD)
        ):
            raise ConfigError(
                "preprocess named 'imagenet' but its mean/std/channels are not ImageNet's",
                hint="drop the name, or use mean/std imagenet with rgb or bgr",
            )

    @classmethod
    def default_for(cls, input_shape: Sequence[int]) -> Preprocess:
        """The recipe assumed for a model taking ``(C, H, W)``: crop H x W, resize
        ``round(max(H, W) / 0.875)``, ImageNet mean/std for 3 channels (RGB), 0.5/0.5 for 1."""
        c, h, w = _image_shape(input_shape)
        if c == 3:
            mean, std, channels, named = IMAGENET_MEAN, IMAGENET_STD, Channels.RGB, Named.IMAGENET
        else:
            mean, std, channels, named = GRAY_MEAN, GRAY_STD, Channels.GRAY, None
        return cls((h, w), default_resize((h, w)), mean, std, channels, named=named)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of what the recipe produces."""
        return (self.channels.count, *self.crop)

    def check(self, input_shape: Sequence[int]) -> None:
        """ConfigError (exit 2) naming both when the recipe's output does not fit a model
        taking ``input_shape`` (channels and crop size)."""
        c, h, w = _image_shape(input_shape)
        if c != self.channels.count:
            want = "gray" if c == 1 else "rgb or bgr"
            raise ConfigError(
                f"the model takes {c} channel(s) but the preprocessing gives "
                f"{self.channels.count} ({self.channels.value})",
                hint=f"use channels {want} for this model",
            )
        if (h, w) != self.crop:
            raise ConfigError(
                f"the model takes {h}x{w} inputs but the preprocessing crops "
                f"{self.crop[0]}x{self.crop[1]}",
                hint=f"crop {h}x{w} (resize at least {max(h, w)})",
            )

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` after the resize (torchvision ``Resize(int)``): the shorter side
        becomes ``resize``, the longer ``int(resize * long / short)``; unchanged without one."""
        if self.resize is None:
            return width, height
        if width <= height:
            return self.resize, int(self.resize * height / width)
        return int(self.resize * width / height), self.resize

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of the center crop of a ``width x height`` image
        (torchvision ``CenterCrop``: ``top = int(round((height - crop_h) / 2))``, Python's
        round, half to even). Negative offsets (image smaller than the crop) mean black padding,
        as PIL's ``crop`` and torchvision's pad-then-crop both give."""
        ch, cw = self.crop
        if cw > width or ch > height:
            # torchvision pads first (left = (cw - w) // 2), then crops from the padded image
            pad_l = (cw - width) // 2 if cw > width else 0
            pad_t = (ch - height) // 2 if ch > height else 0
            pad_w = width + pad_l + ((cw - width + 1) // 2 if cw > width else 0)
            pad_h = height + pad_t + ((ch - height + 1) // 2 if ch > height else 0)
            left = int(round((pad_w - cw) / 2.0)) - pad_l
            top = int(round((pad_h - ch) / 2.0)) - pad_t
        else:
            left = int(round((width - cw) / 2.0))
            top = int(round((height - ch) / 2.0))
        return left, top, left + cw, top + ch

    def normalize(self, view: np.ndarray) -> np.ndarray:
        """The model input from a uint8 scoring view (``(H, W)`` gray or ``(H, W, 3)`` RGB, as
        ``images.scoring_view`` gives): ``(x * scale - mean) / std``, BGR reversed, CHW
        float32. Also takes a batch ``(N, H, W[, 3])`` and gives ``(N, C, H, W)``."""
        x = np.asarray(view)
        batched = x.ndim == (4 if self.channels.count == 3 else 3)
        if self.channels.count == 1:
            x = x[..., None]
        if self.channels is Channels.BGR:
            x = x[..., ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        out = (x.astype(np.float32) * np.float32(self.scale) - mean) / std
        return np.ascontiguousarray(np.moveaxis(out, -1, -3 if batched else 0), np.float32)

    def formula(self) -> str:
        """The recipe in words, written beside exported models so an app can repeat it."""
        ch, cw = self.crop
        conv = 'convert("L")' if self.channels is Channels.GRAY else 'convert("RGB")'
        steps = [f"decode the file (EXIF orientation ignored), PIL {conv}"]
        if self.resize is not None:
            r = self.resize
            steps.append(
                f"resize with PIL {self.interpolation.value} so the shorter side is {r} and the "
                f"longer int({r} * long / short)"
            )
        steps.append(
            f"center crop {ch}x{cw}: top = int(round((height - {ch}) / 2)), left = "
            f"int(round((width - {cw}) / 2)) (round half to even; black padding where the "
            "image is smaller)"
        )
        if self.channels is Channels.BGR:
            steps.append("reverse the channel order to BGR")
        steps.append(
            f"x = (pixel * {self.scale!r} - mean) / std per channel with mean "
            f"{list(self.mean)} and std {list(self.std)}"
        )
        steps.append(f"layout C x H x W float32 = {self.input_shape}, batched as N x C x H x W")
        return "; ".join(steps)

    def describe(self) -> str:
        """One line for the output: ``resize 256, center crop 224, mean/std imagenet``."""
        ch, cw = self.crop
        crop = str(ch) if ch == cw else f"{ch}x{cw}"
        if self.named is not None:
            norm = f"mean/std {self.named.value}"
        else:
            norm = f"mean {_short(self.mean)} std {_short(self.std)}"
        head = f"resize {self.resize}, " if self.resize is not None else "no resize, "
        return f"{head}center crop {crop}, {norm}, {self.channels.value}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``preprocess.json``, ONNX metadata, the run record), with the
        ``formula`` in words; ``from_dict`` reads it back."""
        return {
            "schema_version": SCHEMA_VERSION,
            "resize": self.resize,
            "crop": list(self.crop),
            "mean": list(self.mean),
            "std": list(self.std),
            "channels": self.channels.value,
            "scale": self.scale,
            "interpolation": self.interpolation.value,
            "exif_transpose": self.exif_transpose,
            "named": None if self.named is None else self.named.value,
            "formula": self.formula(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocess:
        """The recipe ``to_dict`` wrote; ConfigError for anything else (an unknown key or
        version, a missing field, a value out of range). ``formula`` is derived, not read."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"a preprocess record must be a JSON object, not {type(d).__name__}")
        version = d.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"preprocess record version {version!r} is not {SCHEMA_VERSION}",
                hint="upgrade edgeopt to read it",
            )
        fields = set(_FIELDS)
        unknown = set(d) - fields - {"schema_version", "formula"}
        missing = {"crop", "resize", "mean", "std", "channels"} - set(d)
        if unknown or missing:
            what = ", ".join(
                [f"unknown {k!r}" for k in sorted(unknown)]
                + [f"missing {k!r}" for k in sorted(missing)]
            )
            raise ConfigError(f"preprocess record: {what}")
        return cls(**{k: d[k] for k in fields if k in d})


_FIELDS = (
    "crop",
    "resize",
    "mean",
    "std",
    "channels",
    "scale",
    "interpolation",
    "exif_transpose",
    "named",
)


def default_resize(crop: tuple[int, int]) -> int:
    """``round(max(h, w) / 0.875)``: 224 -> 256, 112 -> 128, 32 -> 37."""
    return int(round(max(crop) / CROP_FRACTION))


def _image_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ConfigError(
            f"image data needs a model taking (channels, height, width) with 1 or 3 channels; "
            f"this one takes {shape}",
            hint="use an .npz or a module:callable Dataset for other inputs",
        )
    return shape  # type: ignore[return-value]


def _short(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)
