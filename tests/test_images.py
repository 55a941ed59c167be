"""Hostile and unusual image files: each one gives an `ImageError` that says what was wrong, or a correct
8-bit RGB image the right way up — never another exception, never a silently wrong picture."""
import gzip
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from s3lib.core import ImageError, load_image


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def noise(width=64, height=48, mode="RGB") -> Image.Image:
    pixels = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def png_claiming(width: int, height: int) -> bytes:
    "A tiny PNG whose header claims a huge size (a decompression bomb): only the header is valid."
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def exif_rotated() -> bytes:
    "Stored 40×20 with a red left edge; orientation 6 says: rotate 90° clockwise to view (so 20×40, red on top)."
    sideways = Image.new("RGB", (40, 20), (0, 0, 255))
    sideways.paste((255, 0, 0), (0, 0, 10, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(sideways, "JPEG", exif=exif, quality=95)


def palette_with_transparency() -> bytes:
    picture = Image.new("P", (8, 8), 0)
    picture.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    picture.paste(1, (4, 0, 8, 8))
    return encoded(picture, "PNG", transparency=0)  # index 0 (red) is transparent


JPEG = encoded(noise(), "JPEG")

REFUSED = {
    "zero bytes": b"",
    "text named .jpg": b"Dear customer, your photo is attached.",
    "html page": b"<!doctype html><html><body>not found</body></html>",
    "truncated JPEG": JPEG[: len(JPEG) // 2],
    "JPEG header only": JPEG[:20],
    "PNG signature only": b"\x89PNG\r\n\x1a\n",
    "decompression bomb (PNG header claims 100k x 100k)": png_claiming(100_000, 100_000),
    "gzip file": gzip.compress(b"not an image" * 10),
    "PDF": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF",
    "random bytes": np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "corrupt PNG data": encoded(noise(), "PNG")[:60] + b"\x00" * 200,
}


@pytest.mark.parametrize("data", REFUSED.values(), ids=REFUSED.keys())
def test_refused_with_a_reason(data):
    with pytest.raises(ImageError) as refused:
        load_image(data, max_pixels=40_000_000)
    assert refused.value.status == 422 and len(refused.value.message) > 10


def rgb(data: bytes) -> np.ndarray:
    picture = load_image(data)
    assert picture.mode == "RGB"
    return np.asarray(picture)


ACCEPTED = {
    # name: (file bytes, (width, height), a check on the decoded pixels)
    "16-bit greyscale PNG": (encoded(Image.fromarray(np.full((6, 5), 65535, np.uint16)), "PNG"), (5, 6),
                             lambda a: (a == 255).all()),
    "CMYK JPEG": (encoded(Image.new("CMYK", (7, 5), (0, 255, 255, 0)), "JPEG", quality=95), (7, 5),
                  lambda a: a[2, 3, 0] > 200 and a[2, 3, 1] < 60),  # pure red in CMYK stays red
    "palette + transparency": (palette_with_transparency(), (8, 8),
                               lambda a: (a[0, 0] == 255).all() and tuple(a[0, 6]) == (0, 255, 0)),  # transparent → white
    "RGBA half transparent": (encoded(Image.new("RGBA", (4, 4), (0, 0, 0, 128)), "PNG"), (4, 4),
                              lambda a: 120 <= a[0, 0, 0] <= 135),  # black at 50 % over white
    "LA greyscale + alpha": (encoded(Image.new("LA", (3, 3), (0, 0)), "PNG"), (3, 3), lambda a: (a == 255).all()),
    "EXIF-rotated phone JPEG": (exif_rotated(), (20, 40), lambda a: a[2, 10, 0] > 200 and a[38, 10, 2] > 200),
    "1-bit black and white": (encoded(Image.new("1", (9, 9), 1), "PNG"), (9, 9), lambda a: (a == 255).all()),
    "1x1 pixel": (encoded(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"), (1, 1), lambda a: tuple(a[0, 0]) == (1, 2, 3)),
    "odd size WebP": (encoded(noise(333, 517), "WEBP", lossless=True), (333, 517),
                      lambda a: np.array_equal(a, np.asarray(noise(333, 517)))),
    "animated GIF (first frame)": (encoded(Image.new("P", (6, 4), 0), "GIF", save_all=True,
                                           append_images=[Image.new("P", (6, 4), 1)]), (6, 4), lambda a: a.shape == (4, 6, 3)),
    "BMP": (encoded(Image.new("RGB", (5, 3), (10, 20, 30)), "BMP"), (5, 3), lambda a: tuple(a[1, 1]) == (10, 20, 30)),
    "TIFF": (encoded(Image.new("RGB", (5, 3), (10, 20, 30)), "TIFF"), (5, 3), lambda a: tuple(a[1, 1]) == (10, 20, 30)),
    "32-bit float TIFF": (encoded(Image.fromarray(np.full((3, 4), 0.5, np.float32)), "TIFF"), (4, 3),
                          lambda a: 120 <= a[0, 0, 0] <= 135),
}


@pytest.mark.parametrize("data,size,check", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_decoded_correctly(data, size, check):
    pixels = rgb(data)
    assert pixels.dtype == np.uint8 and (pixels.shape[1], pixels.shape[0]) == size
    assert check(pixels)


def test_limits_come_from_the_caller():
    big = encoded(Image.new("RGB", (2000, 1000)), "PNG")
    with pytest.raises(ImageError, match="decompression-bomb"):
        load_image(big, max_pixels=1_000_000)
    with pytest.raises(ImageError, match="limit"):
        load_image(big, max_bytes=100)
    assert load_image(big, max_pixels=2_000_000).size == (2000, 1000)
