import io

import numpy as np
import pytest
from PIL import Image

from conftest import a_face_path
from faceattr.vision.image import ImageError, load_image, square_resize


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def test_real_face_loads():
    a = load_image(a_face_path())
    assert a.shape == (200, 200, 3) and a.dtype == np.uint8


def test_truncated_jpeg(tmp_path):
    data = a_face_path().read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated|unreadable"):
        load_image(p)


@pytest.mark.parametrize("content,match", [(b"hello, not an image", "not an image"), (b"", "empty file")])
def test_non_images(tmp_path, content, match):
    p = tmp_path / "x.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageError, match=match):
        load_image(p)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_huge_image_refused_before_decoding():
    # 20000 x 20000 one-bit PNG: a few KB on disk, 400 MP decoded
    data = _save(Image.new("1", (20000, 20000)), "PNG")
    assert len(data) < 200_000
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_image(data)
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_image(_save(Image.new("RGB", (300, 300)), "PNG"), max_pixels=50_000)


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "LA", "P", "I;16", "1"])
def test_modes_become_rgb(mode):
    base = Image.new("RGB", (40, 30), (200, 100, 50))
    im = base.convert(mode) if mode not in ("I;16",) else Image.fromarray(np.full((30, 40), 40000, np.uint16))
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    a = load_image(_save(im, fmt))
    assert a.shape == (30, 40, 3) and a.dtype == np.uint8
    if mode == "I;16":
        assert abs(int(a[0, 0, 0]) - round(40000 / 65535 * 255)) <= 1


def test_alpha_composited_on_white():
    im = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    a = load_image(_save(im, "PNG"))
    assert (a == 255).all()


def test_exif_rotation_applied():
    im = Image.new("RGB", (60, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to view
    a = load_image(_save(im, "JPEG", exif=exif.tobytes(), quality=95))
    assert a.shape == (60, 20, 3)  # upright: portrait
    assert a[2, 10, 2] > 200 and a[2, 10, 0] < 80  # the blue strip is now on top


def test_arrays_and_square_resize():
    g = np.full((50, 80), 7, np.uint8)
    assert load_image(g).shape == (50, 80, 3)
    f = np.ones((9, 9, 3), np.float32)
    assert load_image(f).max() == 255
    r = square_resize(np.zeros((50, 80, 3), np.uint8), 32)
    assert r.shape == (32, 32, 3)
    with pytest.raises(ImageError):
        load_image(np.zeros((3, 4, 5, 6), np.uint8))


def test_huge_jpeg_decoded_at_reduced_size_and_the_factor_returned():
    """A JPEG of 4,800 px is decoded at 1/2 (2,400 px >= 2,048) with the factor back to the photo's pixels; one of
    3,000 px, a PNG, or no limit: full size, factor 1."""
    from faceattr.vision.image import decode_image

    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (3200, 4800, 3), dtype=np.uint8)
    jpg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(big).save(jpg, "JPEG", quality=80)
    Image.fromarray(big[:2000, :3000]).save(png, "PNG")
    arr, scale = decode_image(jpg.getvalue(), reduce_above=2048)
    assert arr.shape == (1600, 2400, 3) and scale == 2.0
    arr, scale = decode_image(jpg.getvalue())
    assert arr.shape == (3200, 4800, 3) and scale == 1.0
    arr, scale = decode_image(png.getvalue(), reduce_above=1000)
    assert arr.shape == (2000, 3000, 3) and scale == 1.0
    small = io.BytesIO()
    Image.fromarray(big[:2000, :3000]).save(small, "JPEG")
    assert decode_image(small.getvalue(), reduce_above=2048)[1] == 1.0
