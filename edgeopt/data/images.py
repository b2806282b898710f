"""Image files -> model inputs, with Pillow (an optional extra: ``pip install 'edgeopt[images]'``,
imported inside the functions that need it).

``decode`` reads one JPEG or PNG into a PIL image of the recipe's channels; ``scoring_view``
resizes and center-crops it as torchvision does (the arithmetic is ``Preprocess``'s) into a
uint8 array, the unit a cache stores; ``load`` is both plus ``Preprocess.normalize``. A file
Pillow cannot read (garbage, truncated, too many pixels, another format) raises ``ImageError``
naming it, so a folder source can skip it and say which.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.data.preprocess import Channels, Preprocess
from edgeopt.errors import ConfigError

if TYPE_CHECKING:
    from types import ModuleType

    from PIL.Image import Image

INSTALL_HINT = "pip install 'edgeopt[images]'"
FORMATS = ("JPEG", "PNG")
"""What ``decode`` opens (Pillow's JPEG opener also takes the multi-picture JPEGs (MPO) some
cameras write, reading their first frame)."""
MAX_PIXELS = 89_478_485
"""Pixels per image above which a file is refused as a decompression bomb (Pillow's own
default warning limit, 0.25 GB of RGBA; Pillow's error comes only at twice that)."""


class ImageError(ConfigError):
    """One image file that cannot be read: not an image, another format, truncated, or too
    large. Folder sources catch it to skip the file; uncaught it is bad input (exit 2)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(
            f"cannot read image {path}: {reason}",
            hint="replace or remove the file (JPEG and PNG are read)",
        )
        self.path = Path(path)
        self.reason = reason


def pillow() -> ModuleType:
    """``PIL.Image``, or ConfigError (exit 2) saying how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError(
            "reading image files needs Pillow, which is not installed", hint=INSTALL_HINT
        ) from None
    return Image


def _bad_file_errors(pil: ModuleType) -> tuple[type[BaseException], ...]:
    # what Pillow raises on hostile bytes: OSError (truncated, broken stream, unidentified),
    # SyntaxError (PNG chunk checks), struct/zlib errors from header parsers, bomb errors
    return (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        struct.error,
        zlib.error,
        pil.DecompressionBombError,
        pil.DecompressionBombWarning,
    )


def probe(path: Path | str, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` from the file's header alone (no pixel data is decoded, about
    50 us a file); ImageError for a file that is not a JPEG/PNG or has over ``max_pixels``.
    A file that passes may still fail in ``decode`` (a truncated body)."""
    pil = pillow()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pil.DecompressionBombWarning)
            with pil.open(path, formats=FORMATS) as img:
                size = (int(img.width), int(img.height))
    except _bad_file_errors(pil) as e:
        raise ImageError(path, _reason(e)) from None
    _check_pixels(path, size, max_pixels)
    return size


def decode(
    path: Path | str,
    channels: Channels,
    max_pixels: int = MAX_PIXELS,
    *,
    exif_transpose: bool = False,
) -> Image:
    """The whole image as a loaded PIL image in mode ``"L"`` (gray) or ``"RGB"``.

    16-bit gray is scaled to 8 bits (``round(v / 257)``) rather than clipped; an alpha channel
    is dropped (not composited); palette, CMYK and the rest convert with Pillow's rules. EXIF
    orientation is applied only with ``exif_transpose`` (before the conversion, which drops
    the EXIF block; torchvision's ImageFolder ignores it). ImageError for anything Pillow
    cannot decode.
    """
    pil = pillow()
    mode = "L" if channels is Channels.GRAY else "RGB"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pil.DecompressionBombWarning)
            with pil.open(path, formats=FORMATS) as opened:
                _check_pixels(path, (opened.width, opened.height), max_pixels)
                opened.load()
                img = _upright(opened) if exif_transpose else opened
                if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                    wide = np.asarray(img).astype(np.float64)
                    eight = np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8)
                    img8 = pil.fromarray(eight)  # 2-D uint8: mode "L"
                    out = img8 if mode == "L" else img8.convert(mode)
                elif img.mode == mode:
                    out = img.copy()
                else:
                    out = img.convert(mode)
    except _bad_file_errors(pil) as e:
        raise ImageError(path, _reason(e)) from None
    return out


def scoring_view(img: Image, recipe: Preprocess) -> np.ndarray:
    """The resized, center-cropped pixels as uint8, ``(H, W)`` gray or ``(H, W, 3)`` RGB (BGR
    is applied by ``normalize``): torchvision's ``Resize(recipe.resize)`` + ``CenterCrop`` on a
    PIL image, with the same PIL filter, so the same bytes."""
    pil = pillow()
    size = recipe.resized_size(img.width, img.height)
    if size != (img.width, img.height):
        img = img.resize(size, resample=pil.Resampling.BILINEAR)
    box = recipe.crop_box(img.width, img.height)
    if box != (0, 0, img.width, img.height):
        img = img.crop(box)  # outside the image PIL fills with 0, as torchvision's pad does
    return np.asarray(img, dtype=np.uint8)


def read_view(path: Path | str, recipe: Preprocess, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``scoring_view(decode(path))``: one file's uint8 pixels as the model will see them."""
    img = decode(path, recipe.channels, max_pixels, exif_transpose=recipe.exif_transpose)
    try:
        return scoring_view(img, recipe)
    finally:
        img.close()


def load(path: Path | str, recipe: Preprocess, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One file as a ``(C, H, W)`` float32 model input; ImageError when it cannot be read."""
    return recipe.normalize(read_view(path, recipe, max_pixels))


def _upright(img: Image) -> Image:
    from PIL import ImageOps

    return ImageOps.exif_transpose(img)


def _check_pixels(path: Path | str, size: tuple[int, int], max_pixels: int) -> None:
    if size[0] * size[1] > max_pixels:
        raise ImageError(
            path,
            f"{size[0]}x{size[1]} is over {max_pixels:,} pixels (a decompression bomb?)",
        )


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    name = type(e).__name__
    if name.startswith("DecompressionBomb"):
        return f"over Pillow's pixel limit (a decompression bomb?): {text}"
    if "cannot identify image file" in text:
        return "not a JPEG or PNG image"
    return f"{name}: {text}" if text else name
