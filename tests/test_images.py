"""Image decoding and preprocessing: real PNG/JPEG files written here with Pillow (from the dev
extra: these tests never skip), the recipe's geometry checked against a numpy re-computation of
torchvision's formula and of PIL's bilinear filter, and every kind of unreadable file."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeopt.data.images import ImageError, decode, load, probe, read_view
from edgeopt.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Channels,
    Named,
    Preprocess,
)
from edgeopt.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _save(path: Path, pixels: np.ndarray, **kw: object) -> Path:
    Image.fromarray(pixels).save(path, **kw)
    return path


def _pixels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --- PIL's bilinear resize, computed again in numpy (libImaging/Resample.c) ---------------
PRECISION_BITS = 32 - 8 - 2


def _coefficients(in_size: int, out_size: int) -> list[tuple[int, np.ndarray]]:
    """Per output pixel: first input pixel and fixed-point weights (precompute_coeffs +
    normalize_coeffs_8bpc)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    out = []
    for i in range(out_size):
        center = (i + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        t = (np.arange(xmin, xmax) - center + 0.5) / filterscale
        w = np.where(np.abs(t) < 1.0, 1.0 - np.abs(t), 0.0)
        w = w / w.sum()
        out.append((xmin, np.floor(0.5 + w * (1 << PRECISION_BITS)).astype(np.int64)))
    return out


def _resample_rows(img: np.ndarray, out_w: int) -> np.ndarray:
    """Horizontal pass on (H, W, C) uint8, rounded and clipped to uint8 as PIL's is."""
    res = np.empty((img.shape[0], out_w, img.shape[2]), dtype=np.uint8)
    for i, (xmin, k) in enumerate(_coefficients(img.shape[1], out_w)):
        acc = (1 << (PRECISION_BITS - 1)) + np.tensordot(
            img[:, xmin : xmin + len(k), :].astype(np.int64), k, axes=([1], [0])
        )
        res[:, i, :] = np.clip(acc >> PRECISION_BITS, 0, 255)
    return res


def _pil_bilinear(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    x = img if img.ndim == 3 else img[..., None]
    if out_w != x.shape[1]:
        x = _resample_rows(x, out_w)
    if out_h != x.shape[0]:
        x = _resample_rows(x.transpose(1, 0, 2), out_h).transpose(1, 0, 2)
    return x if img.ndim == 3 else x[..., 0]


def _torchvision_by_hand(img: np.ndarray, resize: int, crop: tuple[int, int]) -> np.ndarray:
    """Resize(resize) + CenterCrop(crop) as torchvision documents them, on an (H, W[, C]) array."""
    h, w = img.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    x = _pil_bilinear(img, new_w, new_h)
    top = int(round((new_h - crop[0]) / 2.0))
    left = int(round((new_w - crop[1]) / 2.0))
    return x[top : top + crop[0], left : left + crop[1]]


def test_rgb_png_resize_and_crop_equal_torchvision_formula(tmp_path: Path) -> None:
    # 13 wide x 9 high: shorter side 9 -> 6, long int(6 * 13 / 9) = 8; crop 5: left =
    # round(1.5) = 2 and top = round(0.5) = 0 (half to even), so the rounding rule shows
    pixels = _pixels((9, 13, 3))
    path = _save(tmp_path / "a.png", pixels)
    recipe = Preprocess((5, 5), 6, IMAGENET_MEAN, IMAGENET_STD, Channels.RGB)
    assert recipe.resized_size(13, 9) == (8, 6)
    assert recipe.crop_box(8, 6) == (2, 0, 7, 5)
    view = read_view(path, recipe)
    expected = _torchvision_by_hand(pixels, 6, (5, 5))
    assert view.dtype == np.uint8 and view.shape == (5, 5, 3)
    np.testing.assert_array_equal(view, expected)
    x = load(path, recipe)
    assert x.dtype == np.float32 and x.shape == (3, 5, 5)
    by_hand = (expected.astype(np.float64) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(x, by_hand.transpose(2, 0, 1), rtol=0, atol=1e-5)


def test_gray_png_portrait_upscale_and_non_square_crop(tmp_path: Path) -> None:
    pixels = _pixels((11, 7), seed=1)  # portrait: width is the shorter side
    path = _save(tmp_path / "g.png", pixels)
    recipe = Preprocess((9, 8), 9, (0.5,), (0.25,), Channels.GRAY)
    assert recipe.resized_size(7, 11) == (9, 14)  # int(9 * 11 / 7) = 14
    view = read_view(path, recipe)
    np.testing.assert_array_equal(view, _torchvision_by_hand(pixels, 9, (9, 8)))
    x = load(path, recipe)
    assert x.shape == (1, 9, 8)
    np.testing.assert_allclose(x[0], (view / 255.0 - 0.5) / 0.25, atol=1e-5)


def test_image_smaller_than_crop_without_resize_is_padded_black(tmp_path: Path) -> None:
    pixels = _pixels((4, 5, 3), seed=2) | 1  # no zero pixel, so padding is told apart
    path = _save(tmp_path / "s.png", pixels)
    recipe = Preprocess((6, 8), None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), Channels.RGB)
    view = read_view(path, recipe)
    # torchvision: pad left (8-5)//2 = 1, right 2, top (6-4)//2 = 1, bottom 1, then crop all
    expected = np.zeros((6, 8, 3), np.uint8)
    expected[1:5, 1:6] = pixels
    np.testing.assert_array_equal(view, expected)


def test_channels_gray_rgb_bgr_and_modes(tmp_path: Path) -> None:
    rgb = _pixels((4, 4, 3), seed=3)
    path = _save(tmp_path / "c.png", rgb)
    same = (1, 1, 1)
    as_rgb = load(path, Preprocess((4, 4), None, (0, 0, 0), same, Channels.RGB, scale=1))
    as_bgr = load(path, Preprocess((4, 4), None, (0, 0, 0), same, Channels.BGR, scale=1))
    np.testing.assert_array_equal(as_rgb, rgb.transpose(2, 0, 1).astype(np.float32))
    np.testing.assert_array_equal(as_bgr, as_rgb[::-1])
    # RGB -> gray: PIL's ITU-R 601-2 luma in fixed point
    gray = decode(path, Channels.GRAY)
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    luma = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
    assert gray.mode == "L"
    np.testing.assert_array_equal(np.asarray(gray), luma)
    # gray file -> RGB: three equal channels
    g_path = _save(tmp_path / "g.png", rgb[..., 0])
    np.testing.assert_array_equal(np.asarray(decode(g_path, Channels.RGB)), rgb[..., [0, 0, 0]])
    # RGBA: alpha dropped, colour kept as is
    rgba = np.dstack([rgb, np.full((4, 4), 7, np.uint8)])
    a_path = _save(tmp_path / "a.png", rgba)
    np.testing.assert_array_equal(np.asarray(decode(a_path, Channels.RGB)), rgb)
    # 16-bit gray PNG: scaled to 8 bits, not clipped at 255
    wide = np.array([[0, 257, 65535], [32896, 1000, 65000]], np.uint16)
    w_path = tmp_path / "w.png"
    Image.fromarray(wide).save(w_path)
    assert Image.open(w_path).mode.startswith("I")
    assert np.asarray(decode(w_path, Channels.GRAY)).tolist() == [[0, 1, 255], [128, 4, 253]]


def test_jpeg_decodes_to_its_size_and_colour(tmp_path: Path) -> None:
    flat = np.zeros((20, 30, 3), np.uint8) + np.array([200, 40, 90], np.uint8)
    path = _save(tmp_path / "f.jpg", flat, quality=95)
    assert probe(path) == (30, 20)
    img = decode(path, Channels.RGB)
    assert img.size == (30, 20) and img.mode == "RGB"
    assert np.abs(np.asarray(img).astype(int) - flat).max() <= 3
    assert load(path, Preprocess.default_for((1, 16, 16))).shape == (1, 16, 16)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))


def test_unreadable_files_raise_image_error_naming_the_file(tmp_path: Path) -> None:
    recipe = Preprocess.default_for((3, 8, 8))
    jpg = _save(tmp_path / "whole.jpg", _pixels((64, 64, 3)), quality=90)
    data = jpg.read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    png = _save(tmp_path / "whole.png", _pixels((64, 64, 3)))
    (tmp_path / "half.png").write_bytes(png.read_bytes()[: len(png.read_bytes()) // 2])
    (tmp_path / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    (tmp_path / "empty.png").write_bytes(b"")
    Image.fromarray(_pixels((8, 8, 3))).save(tmp_path / "other.png", format="GIF")
    # a header that claims 20000 x 20000 pixels: refused from the header, nothing allocated
    (tmp_path / "bomb.png").write_bytes(_png_header_only(20000, 20000))

    # truncated bodies pass the header probe and fail when decoded
    for name in ("half.jpg", "half.png"):
        assert probe(tmp_path / name) == (64, 64)
        with pytest.raises(ImageError) as e:
            load(tmp_path / name, recipe)
        assert e.value.path == tmp_path / name and name in e.value.message
        assert e.value.exit_code == 2
    for name, why in [
        ("noise.jpg", "not a JPEG or PNG"),
        ("empty.png", "not a JPEG or PNG"),
        ("other.png", "not a JPEG or PNG"),
        ("bomb.png", "(a decompression bomb?)"),
    ]:
        for read in (probe, lambda p: load(p, recipe)):
            with pytest.raises(ImageError) as e:
                read(tmp_path / name)
            assert why in e.value.reason, (name, e.value.reason)
            assert e.value.path == tmp_path / name
    # the limit is a parameter: a 64 x 64 file over a 1,000-pixel limit is refused too
    with pytest.raises(ImageError, match=r"64x64 is over 1,000 pixels \(a decompression bomb"):
        load(jpg, recipe, max_pixels=1000)


def test_missing_pillow_is_a_config_error_naming_the_extra(tmp_path: Path) -> None:
    path = _save(tmp_path / "a.png", _pixels((4, 4)))
    code = (
        "import sys; sys.modules['PIL'] = None\n"
        "from edgeopt.data.images import load\n"
        "from edgeopt.data.preprocess import Preprocess\n"
        "from edgeopt.errors import ConfigError\n"
        "try:\n"
        f"    load({str(path)!r}, Preprocess.default_for((1, 4, 4)))\n"
        "except ConfigError as e:\n"
        "    print(e.exit_code, e.message, '|', e.hint)\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == (
        "2 reading image files needs Pillow, which is not installed | pip install 'edgeopt[images]'"
    )


def test_defaults_from_the_model_input_shape() -> None:
    rgb = Preprocess.default_for((3, 224, 224))
    assert (rgb.resize, rgb.crop, rgb.channels, rgb.named) == (
        256,
        (224, 224),
        Channels.RGB,
        Named.IMAGENET,
    )
    assert (rgb.mean, rgb.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert rgb.describe() == "resize 256, center crop 224, mean/std imagenet, rgb"
    gray = Preprocess.default_for((1, 28, 28))
    assert (gray.resize, gray.crop, gray.mean, gray.std) == (32, (28, 28), (0.5,), (0.5,))
    assert gray.describe() == "resize 32, center crop 28, mean 0.5 std 0.5, gray"
    assert Preprocess.default_for((3, 112, 96)).resize == 128  # from the longer side
    assert gray.input_shape == (1, 28, 28)
    rgb.check((3, 224, 224))


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 224, 224), "the model takes 1 channel(s) but the preprocessing gives 3 (rgb)"),
        ((3, 112, 112), "the model takes 112x112 inputs but the preprocessing crops 224x224"),
        ((3, 224), "(channels, height, width) with 1 or 3 channels; this one takes (3, 224)"),
        ((4, 224, 224), "this one takes (4, 224, 224)"),
    ],
)
def test_recipe_checked_against_the_model(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        Preprocess.default_for((3, 224, 224)).check(shape)
    assert message in e.value.message and e.value.exit_code == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resize": 200}, "resize 200 is smaller than the crop 224x224"),
        ({"resize": 0}, "resize must be positive whole numbers"),
        ({"crop": (224, 224, 3)}, "crop is (height, width)"),
        ({"crop": (224.5, 224)}, "crop must be positive whole numbers"),
        ({"mean": (0.5, 0.5)}, "mean has 2 values for 3 channel(s) (rgb)"),
        ({"std": (1.0, 0.0, 1.0)}, "std must be positive"),
        ({"std": (1.0, float("nan"), 1.0)}, "std must be finite"),
        ({"mean": "imagenet"}, "mean must be numbers"),
        ({"channels": "rgba"}, "'rgba' is not a valid Channels"),
        ({"interpolation": "nearest"}, "not a valid Interpolation"),
        ({"named": "imagenet", "mean": (0.5, 0.5, 0.5)}, "named 'imagenet' but"),
        ({"scale": 0}, "scale must be a positive number"),
    ],
)
def test_bad_recipes_are_config_errors(kwargs: dict, message: str) -> None:
    base = dict(crop=(224, 224), resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD, channels="rgb")
    with pytest.raises(ConfigError) as e:
        Preprocess(**{**base, **kwargs})
    assert message in e.value.message


def test_recipe_round_trips_through_json_with_its_formula() -> None:
    recipe = Preprocess((224, 200), 256, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7), Channels.BGR)
    d = json.loads(json.dumps(recipe.to_dict()))
    assert Preprocess.from_dict(d) == recipe
    assert d["crop"] == [224, 200] and d["channels"] == "bgr" and d["schema_version"] == 1
    formula = d["formula"]
    for part in (
        "shorter side is 256 and the longer int(256 * long / short)",
        "top = int(round((height - 224) / 2)), left = int(round((width - 200) / 2))",
        "reverse the channel order to BGR",
        "[0.1, 0.2, 0.3]",
        "(3, 224, 200)",
    ):
        assert part in formula
    assert Preprocess.from_dict(Preprocess.default_for((3, 32, 32)).to_dict()).named == "imagenet"
    for bad, message in [
        ({**d, "resise": 256}, "unknown 'resise'"),
        ({k: v for k, v in d.items() if k != "mean"}, "missing 'mean'"),
        ({**d, "schema_version": 2}, "version 2 is not 1"),
        ([1, 2], "must be a JSON object"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            Preprocess.from_dict(bad)  # type: ignore[arg-type]


def test_normalize_takes_a_batch() -> None:
    recipe = Preprocess((2, 3), None, (0.5, 0.25, 0.0), (0.5, 0.5, 2.0), Channels.RGB)
    views = _pixels((4, 2, 3, 3), seed=5)
    batch = recipe.normalize(views)
    assert batch.shape == (4, 3, 2, 3) and batch.dtype == np.float32
    for i in range(4):
        np.testing.assert_array_equal(batch[i], recipe.normalize(views[i]))


def test_exif_orientation_applied_only_when_the_recipe_says(tmp_path: Path) -> None:
    pixels = _pixels((6, 10, 3), seed=6)  # 10 wide, 6 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(tmp_path / "r.jpg", pixels, quality=95, exif=exif)
    base = dict(crop=(6, 6), resize=None, mean=(0, 0, 0), std=(1, 1, 1), channels="rgb")
    assert read_view(path, Preprocess(**base)).shape == (6, 6, 3)
    assert decode(path, Channels.RGB).size == (10, 6)
    upright = decode(path, Channels.RGB, exif_transpose=True)
    assert upright.size == (6, 10)
    turned = np.rot90(np.asarray(decode(path, Channels.RGB)), k=-1)
    np.testing.assert_array_equal(np.asarray(upright), turned)
    tall = Preprocess(**{**base, "crop": (10, 6), "exif_transpose": True})
    assert read_view(path, tall).shape == (10, 6, 3)
