"""Robust image loading: any photo a user has, as an 8-bit RGB array, or a clear :class:`ImageError`.

Handles EXIF orientation, grayscale, palette, CMYK, alpha (composited on white), 16-bit and float images,
truncated or non-image files, and refuses images above a pixel limit *before* decoding them (no decompression
bomb). Nothing here mutates PIL's global state.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from faceattr.errors import FaceattrError

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 64_000_000  # 64 MP: bigger than any camera photo, far below a bomb's gigapixels

ImageSource = str | Path | bytes | np.ndarray | Image.Image


class ImageError(FaceattrError, ValueError):
    """An image that cannot be used; the message says which file and why."""


def _name(src: ImageSource) -> str:
    return str(src) if isinstance(src, (str, Path)) else f"<{type(src).__name__}>"


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: 16-bit/float scaled to 8 bits, alpha composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if im.mode == "F" and arr.max() <= 1.0:
            hi = 1.0
        im = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im


_PIL_LIMIT_LOCK = threading.Lock()  # Image.MAX_IMAGE_PIXELS is process-wide


EXIF_ORIENTATION = 0x0112


def _draft_factor(im: Image.Image, reduce_above: int | None) -> int:
    """The largest JPEG scale-down (2, 4 or 8) that keeps the long side at least ``reduce_above`` / 2; 1 for other
    formats, for photos below 2 x ``reduce_above``, or with None."""
    if not reduce_above or im.format != "JPEG":
        return 1
    side, k = max(im.size), 1
    while k < 8 and side // (2 * k) >= reduce_above:
        k *= 2
    return k


REDUCE_ABOVE = 2048  # the photo path decodes JPEGs of 4,096 px and more at reduced size, keeping >= 2,048 px


def load_image(src: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load ``src`` (path, bytes, PIL image or HxW[x3|4] uint8 array) as an HxWx3 uint8 RGB array, upright."""
    return decode_image(src, max_pixels)[0]


def decode_image(
    src: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, reduce_above: int | None = None
) -> tuple[np.ndarray, float]:
    """:func:`load_image`, and the factor from the array's pixels to the photo's (1.0 unless reduced).

    ``reduce_above``: a JPEG whose long side is at least twice this is decoded at 1/2, 1/4 or 1/8 size (libjpeg's
    DCT scaling, much cheaper than a full decode and a resize), its long side staying at least ``reduce_above``;
    other formats and smaller photos are decoded at full size."""
    if isinstance(src, np.ndarray):
        return _array_to_rgb(src), 1.0
    if not isinstance(src, (str, Path, bytes, Image.Image)):
        raise ImageError(f"{type(src).__name__} is not an image: give a path, bytes, a PIL image or a numpy array")
    name = _name(src)
    try:
        if isinstance(src, Image.Image):
            im = src
        else:
            if isinstance(src, (str, Path)):
                p = Path(src)
                if not p.exists():
                    raise ImageError(f"{name}: no such file")
                if p.is_dir():
                    raise ImageError(f"{name}: is a folder, not an image")
                if p.stat().st_size == 0:
                    raise ImageError(f"{name}: empty file")
            fp = io.BytesIO(src) if isinstance(src, bytes) else src
            # the size limit is ours (max_pixels, checked below from the header, before any decoding): Pillow's
            # own, fixed at 89 MP, would refuse an image a user allowed with --max-pixels
            with _PIL_LIMIT_LOCK, warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                saved = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None
                try:
                    im = Image.open(fp)
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
        w, h = im.size
        if w * h > max_pixels:
            raise ImageError(
                f"{name}: {w}x{h} = {w * h / 1e6:.0f} MP exceeds the limit of {max_pixels / 1e6:.0f} MP "
                "(raise it with max_pixels / --max-pixels if the image is genuine)"
            )
        if w < 1 or h < 1:
            raise ImageError(f"{name}: empty image ({w}x{h})")
        frames = int(getattr(im, "n_frames", 1) or 1)
        if frames > 1:
            log.warning("%s: %d frames (animation or multi-page); using the first", name, frames)
        reduce = _draft_factor(im, reduce_above)
        if reduce > 1:  # JPEG's DCT scaling: decode a huge photo at 1/2, 1/4 or 1/8 size directly
            im.draft("RGB", (w // reduce, h // reduce))
        im.load()
        scale = w / im.size[0]
        if im.getexif().get(EXIF_ORIENTATION, 1) != 1:  # exif_transpose copies even an upright image: only if needed
            im = ImageOps.exif_transpose(im) or im
        return np.ascontiguousarray(np.asarray(to_rgb(im))), scale
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not an image file (or a format PIL cannot read)") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: image size exceeds the limit, refused as a possible decompression bomb ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: unreadable or truncated image ({e})") from e


MIN_SIDE = 8  # smaller arrays hold no face: refused rather than answered


def _array_to_rgb(a: np.ndarray) -> np.ndarray:
    """An HxW, HxWx1, HxWx3 or HxWx4 array as uint8 RGB. uint8 is taken as is, uint16 is scaled from 0..65535, a
    float array must hold values in 0..1 (a margin of 0.01 is clipped; anything else is refused, since guessing
    0..255 or -1..1 would silently give a wrong image), and non-finite values are refused."""
    if not isinstance(a, np.ndarray) or a.dtype == object:
        raise ImageError(f"not an image array: {type(a).__name__}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageError(f"array of shape {a.shape} is not an HxW, HxWx3 or HxWx4 image")
    if min(a.shape[:2]) < MIN_SIDE:
        raise ImageError(f"array of shape {a.shape} is too small to hold a face (under {MIN_SIDE} px)")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.dtype == np.bool_:
        raise ImageError("a boolean array is not an image")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            if not np.isfinite(a).all():
                raise ImageError("the image array holds NaN or infinite values")
            lo, hi = float(a.min()), float(a.max())
            if lo < -0.01 or hi > 1.01:
                raise ImageError(
                    f"a float image must hold values in 0..1, this one spans {lo:.3g}..{hi:.3g} "
                    "(convert it to uint8 0..255 first)"
                )
            a = np.clip(a, 0.0, 1.0) * 255.0
        elif a.dtype == np.uint16:
            a = a / 257.0
        elif np.issubdtype(a.dtype, np.integer):
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi > 255:
                raise ImageError(
                    f"an integer image must hold values in 0..255 (or be uint16), this one spans {lo}..{hi}"
                )
        else:
            raise ImageError(f"unsupported image array type {a.dtype}")
        a = np.clip(a, 0, 255).round().astype(np.uint8)
    if a.shape[2] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = (a[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(a)


def square_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` x ``size`` (antialiased)."""
    h, w = rgb.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    im = Image.fromarray(rgb[y0 : y0 + s, x0 : x0 + s])
    if s != size:
        im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0 if s > 2 * size else None)
    return np.asarray(im)
