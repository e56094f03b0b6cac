"""Tests for teamgram.service.media.imaging: size ladders, thumbnails, stripped thumbnails.

Independent references: Pillow decodes every output (and its ImageOps.exif_transpose is the
oracle for EXIF orientation); Telethon's stripped_photo_to_jpg rebuilds stripped thumbnails
exactly as clients do.
"""

from __future__ import annotations

import io
import random
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, ImageOps, ImageStat, JpegImagePlugin
from telethon.utils import stripped_photo_to_jpg

from teamgram.service.media import imaging
from teamgram.service.media.imaging import (
    MAX_PIXELS,
    PHOTO_LADDER,
    PROFILE_LADDER,
    ImageError,
    ImageTooLargeError,
    ProcessedPhoto,
    SizedJpeg,
    image_size,
    image_thumbnail,
    ladder_dimensions,
    looks_like_image,
    process_photo,
    stripped_thumbnail,
)

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
YELLOW = (255, 255, 0)
WHITE = (255, 255, 255)

# --- helpers -------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def quadrants(width: int, height: int) -> Image.Image:
    """Red, green / blue, yellow: every flip and rotation gives a different picture."""
    img = Image.new("RGB", (width, height), RED)
    img.paste(GREEN, (width // 2, 0, width, height // 2))
    img.paste(BLUE, (0, height // 2, width // 2, height))
    img.paste(YELLOW, (width // 2, height // 2, width, height))
    return img


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 24) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def px(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = img.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def mean_colour(img: Image.Image) -> tuple[int, ...]:
    return tuple(round(v) for v in ImageStat.Stat(img.convert("RGB")).mean)


def jpeg_markers(data: bytes) -> list[int]:
    """The markers of a JPEG's header, SOI excluded, up to SOS."""
    assert data[:2] == b"\xff\xd8"
    markers, pos = [], 2
    while True:
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:
            return markers
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but holds no pixels: only a lazy reader can handle it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + iend


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header is patched to claim another size."""
    data = bytearray(encode(Image.new("RGB", (16, 16), RED)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def with_orientation(img: Image.Image, orientation: int, **params: object) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make: metadata that must not survive
    return encode(img, "JPEG", exif=exif.tobytes(), comment=b"secret", quality=95, **params)


def check_jpeg(sized: SizedJpeg) -> Image.Image:
    """Every output: a decodable baseline RGB JPEG of the stated size without metadata."""
    img = decode(sized.data)
    assert img.format == "JPEG"
    assert img.mode == "RGB"
    assert img.size == (sized.w, sized.h)
    markers = jpeg_markers(sized.data)
    assert not {0xE1, 0xE2, 0xFE} & set(markers), "EXIF/ICC/comment leaked"
    return img


def icc_matrix_profile(columns: list[tuple[float, float, float]], name: str) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC display profile (gamma 2.2) with given colorants."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(v: tuple[float, float, float]) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(s15(c) for c in v)

    ascii_name = name.encode() + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(ascii_name)) + ascii_name
    desc += b"\0" * 8 + b"\0\0\0" + b"\0" * 67
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(2.2 * 256)) + b"\0\0"
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", xyz(columns[0])),
        (b"gXYZ", xyz(columns[1])),
        (b"bXYZ", xyz(columns[2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    table = struct.pack(">I", len(tags))
    body = b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = struct.pack(">I", size) + b"\0" * 4 + bytes((2, 0x10, 0, 0)) + b"mntrRGB XYZ "
    header += b"\0" * 12 + b"acsp" + b"\0" * 28
    header += s15(0.9642) + s15(1.0) + s15(0.8249)
    header += b"\0" * (128 - len(header))
    return header + table + body


# sRGB colorants adapted to D50, as in every sRGB profile.
SRGB_COLUMNS = [(0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)]


# --- ladders -------------------------------------------------------------------------------


def test_public_constants() -> None:
    assert PHOTO_LADDER == (("s", 100), ("m", 320), ("x", 800), ("y", 1280), ("w", 2560))
    assert PROFILE_LADDER == (("a", 160), ("b", 320), ("c", 640))
    assert MAX_PIXELS == 100_000_000


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((50, 30), [("s", 50, 30)]),
        ((1, 1), [("s", 1, 1)]),
        ((100, 100), [("s", 100, 100)]),
        ((101, 50), [("s", 100, 50), ("m", 101, 50)]),
        ((500, 300), [("s", 100, 60), ("m", 320, 192), ("x", 500, 300)]),
        (
            (1280, 720),
            [("s", 100, 56), ("m", 320, 180), ("x", 800, 450), ("y", 1280, 720)],
        ),
        (
            (5000, 100),
            [
                ("s", 100, 2),
                ("m", 320, 6),
                ("x", 800, 16),
                ("y", 1280, 26),
                ("w", 2560, 51),
            ],
        ),
        (
            (3000, 4000),
            [
                ("s", 75, 100),
                ("m", 240, 320),
                ("x", 600, 800),
                ("y", 960, 1280),
                ("w", 1920, 2560),
            ],
        ),
        (
            (2560, 1440),
            [
                ("s", 100, 56),
                ("m", 320, 180),
                ("x", 800, 450),
                ("y", 1280, 720),
                ("w", 2560, 1440),
            ],
        ),
        (
            (100_000, 1),
            [("s", 100, 1), ("m", 320, 1), ("x", 800, 1), ("y", 1280, 1), ("w", 2560, 1)],
        ),
    ],
)
def test_ladder_dimensions(size: tuple[int, int], expected: list[tuple[str, int, int]]) -> None:
    assert ladder_dimensions(*size) == expected


def test_profile_ladder_dimensions() -> None:
    assert ladder_dimensions(1000, 1000, PROFILE_LADDER) == [
        ("a", 160, 160),
        ("b", 320, 320),
        ("c", 640, 640),
    ]
    assert ladder_dimensions(200, 150, PROFILE_LADDER) == [("a", 160, 120), ("b", 200, 150)]
    assert ladder_dimensions(64, 64, PROFILE_LADDER) == [("a", 64, 64)]


@pytest.mark.parametrize("ladder", [(), (("s", 100), ("m", 100)), (("m", 320), ("s", 100))])
def test_bad_ladders_are_refused(ladder: tuple[tuple[str, int], ...]) -> None:
    with pytest.raises(ValueError):
        ladder_dimensions(1000, 1000, ladder)


@pytest.mark.parametrize(
    "size", [(50, 30), (100, 100), (500, 300), (1280, 720), (5000, 100), (900, 1600), (3000, 2000)]
)
def test_process_photo_ladder(size: tuple[int, int]) -> None:
    width, height = size
    photo = process_photo(encode(quadrants(width, height), quality=92))
    assert isinstance(photo, ProcessedPhoto)
    assert (photo.width, photo.height) == size
    expected = ladder_dimensions(width, height)
    assert [(s.type, s.w, s.h) for s in photo.sizes] == expected
    for sized in photo.sizes:
        img = check_jpeg(sized)
        if sized.w >= 8 and sized.h >= 8:  # the quadrants survive every scale
            assert close(px(img, (sized.w // 4, sized.h // 4)), RED, 40)
            assert close(px(img, (3 * sized.w // 4, 3 * sized.h // 4)), YELLOW, 40)
    areas = [s.w * s.h for s in photo.sizes]
    assert areas == sorted(areas)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "JPEG"])
def test_process_photo_profile_ladder_from_path(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"avatar.{fmt.lower()}"
    path.write_bytes(encode(quadrants(700, 700), fmt))
    photo = process_photo(path, PROFILE_LADDER)
    assert [(s.type, s.w, s.h) for s in photo.sizes] == [
        ("a", 160, 160),
        ("b", 320, 320),
        ("c", 640, 640),
    ]
    for sized in photo.sizes:
        assert close(px(check_jpeg(sized), (sized.w // 4, sized.h // 4)), RED, 40)


def test_bad_ladder_is_refused_before_decoding() -> None:
    with pytest.raises(ValueError) as info:
        process_photo(b"not even an image", ladder=())
    assert not isinstance(info.value, ImageError)
    with pytest.raises(ValueError):
        image_thumbnail(encode(quadrants(64, 64)), box=0)


def test_quality_is_honoured() -> None:
    source = encode(Image.effect_noise((600, 400), 60).convert("RGB"), quality=95)
    low = process_photo(source, quality=30).sizes[-1]
    high = process_photo(source, quality=95).sizes[-1]
    assert len(low.data) < len(high.data)
    with pytest.raises(ValueError):
        process_photo(source, quality=0)


def test_missing_file_is_not_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        process_photo(tmp_path / "nope.jpg")


# --- orientation ---------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    data = with_orientation(quadrants(400, 200), orientation)
    displayed = ImageOps.exif_transpose(decode(data))
    assert displayed is not None
    photo = process_photo(data)
    assert (photo.width, photo.height) == displayed.size
    assert image_size(data) == displayed.size
    largest = photo.sizes[-1]
    out = check_jpeg(largest)
    assert out.size == displayed.size
    w, h = out.size
    for x, y in [
        (w // 4, h // 4),
        (3 * w // 4, h // 4),
        (w // 4, 3 * h // 4),
        (3 * w // 4, 3 * h // 4),
    ]:
        assert close(px(out, (x, y)), px(displayed, (x, y)), 40), (x, y)


def test_orientation_with_reduced_jpeg_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotated panorama large enough for a DCT-scaled decode, requested in stored axes."""
    requested: list[tuple[int, int]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None):  # type: ignore[no-untyped-def]
        assert size is not None
        requested.append(size)
        result = real_draft(self, mode, size)
        requested.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    data = with_orientation(quadrants(6000, 1500), 6)
    photo = process_photo(data)
    assert (photo.width, photo.height) == (1500, 6000)
    assert requested == [(2560, 640), (3000, 750)]  # target in stored axes, decoded at 1/2
    largest = check_jpeg(photo.sizes[-1])
    assert largest.size == (640, 2560)
    displayed_red_corner = (3 * 640 // 4, 2560 // 4)  # rotate 90 clockwise: red goes top right
    assert close(px(largest, displayed_red_corner), RED, 40)


def test_draft_shrinks_a_large_jpeg_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[tuple[int, int]] = []
    real_load = JpegImagePlugin.JpegImageFile.load

    def spy(self: JpegImagePlugin.JpegImageFile):  # type: ignore[no-untyped-def]
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    thumb = image_thumbnail(encode(quadrants(4000, 3000)))
    assert (thumb.w, thumb.h) == (320, 240)
    assert decoded[-1] == (500, 375)  # 1/8 scale: the smallest decode still above 320x240


# --- colour modes and formats --------------------------------------------------------------


def test_png_alpha_goes_onto_white() -> None:
    img = Image.new("RGBA", (200, 100), (0, 255, 0, 0))  # transparent green must not show
    img.paste((255, 0, 0, 255), (0, 0, 100, 100))
    img.paste((0, 0, 0, 128), (100, 50, 200, 100))  # half-transparent black: grey
    photo = process_photo(encode(img, "PNG"))
    out = check_jpeg(photo.sizes[-1])
    assert close(px(out, (50, 50)), RED)
    assert close(px(out, (150, 25)), WHITE)
    assert close(px(out, (150, 75)), (127, 127, 127))


@pytest.mark.parametrize(
    ("mode", "value"),
    [("L", 7), ("RGB", (1, 2, 3)), ("1", 1), ("I;16", 1000)],
)
def test_png_transparent_colour_key(mode: str, value: int | tuple[int, ...]) -> None:
    """A tRNS colour key (no alpha channel) is transparency too."""
    data = encode(Image.new(mode, (16, 16), value), "PNG", transparency=value)
    assert close(px(check_jpeg(process_photo(data).sizes[0]), (8, 8)), WHITE)


def test_palette_png_with_transparency() -> None:
    img = Image.new("P", (64, 64), 0)
    img.putpalette([0, 255, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (0, 0, 32, 64))
    data = encode(img, "PNG", transparency=0)
    out = check_jpeg(process_photo(data).sizes[-1])
    assert close(px(out, (10, 10)), BLUE)
    assert close(px(out, (50, 10)), WHITE)


def test_gif_first_frame_and_transparency() -> None:
    first = Image.new("P", (80, 60), 0)
    first.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * 759)
    first.paste(2, (40, 0, 80, 60))
    second = first.copy()
    second.paste(1, (0, 0, 80, 60))
    data = encode(first, "GIF", save_all=True, append_images=[second], transparency=2)
    photo = process_photo(data)
    assert [(s.type, s.w, s.h) for s in photo.sizes] == [("s", 80, 60)]
    out = check_jpeg(photo.sizes[0])
    assert close(px(out, (10, 30)), RED)
    assert close(px(out, (70, 30)), WHITE)


@pytest.mark.parametrize("lossless", [False, True])
def test_webp(lossless: bool) -> None:
    img = quadrants(640, 480).convert("RGBA")
    img.paste((0, 0, 0, 0), (0, 0, 64, 64))
    photo = process_photo(encode(img, "WEBP", lossless=lossless, quality=90))
    assert [(s.type, s.w, s.h) for s in photo.sizes][-1] == ("x", 640, 480)
    out = check_jpeg(photo.sizes[-1])
    assert close(px(out, (160, 200)), RED, 40)
    assert close(px(out, (20, 20)), WHITE, 40)


def test_bmp_greyscale_cmyk_sixteen_bit_and_mpo() -> None:
    bmp = check_jpeg(process_photo(encode(quadrants(120, 80), "BMP")).sizes[-1])
    assert close(px(bmp, (20, 20)), RED)

    grey = check_jpeg(process_photo(encode(Image.new("L", (64, 64), 100))).sizes[-1])
    assert close(px(grey, (32, 32)), (100, 100, 100), 4)

    cmyk = check_jpeg(
        process_photo(encode(Image.new("CMYK", (64, 64), (0, 255, 255, 0)))).sizes[-1]
    )
    assert close(px(cmyk, (32, 32)), RED, 40)

    deep = Image.new("I;16", (64, 64), 32768)
    deep16 = check_jpeg(process_photo(encode(deep, "PNG")).sizes[-1])
    assert close(px(deep16, (32, 32)), (128, 128, 128), 4)  # scaled, not clipped white

    mpo = encode(
        Image.new("RGB", (64, 48), RED),
        "MPO",
        save_all=True,
        append_images=[Image.new("RGB", (64, 48), BLUE)],
    )
    assert decode(mpo).format == "MPO"
    assert close(px(check_jpeg(process_photo(mpo).sizes[-1]), (32, 24)), RED)


def test_icc_profile_is_converted_to_srgb() -> None:
    # A profile whose "red" channel is sRGB's blue primary and vice versa.
    swapped = icc_matrix_profile([SRGB_COLUMNS[2], SRGB_COLUMNS[1], SRGB_COLUMNS[0]], "Swapped")
    data = encode(Image.new("RGB", (64, 64), RED), icc_profile=swapped)
    out = check_jpeg(process_photo(data).sizes[-1])
    assert close(px(out, (32, 32)), BLUE, 40)

    # Garbage profiles are ignored rather than failing the upload.
    data = encode(Image.new("RGB", (64, 64), RED), "PNG", icc_profile=b"\0" * 200)
    assert close(px(check_jpeg(process_photo(data).sizes[-1]), (32, 32)), RED)


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world",
        bytes(random.Random(7).randrange(256) for _ in range(4096)),
        b"\xff\xd8\xff\xe0" + b"\0" * 100,
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # EPS: Ghostscript never runs
        b"II*\0" + b"\0" * 200,  # TIFF: not among the decoded formats
    ],
    ids=["empty", "text", "random", "jpeg-soi-only", "eps", "tiff"],
)
def test_not_an_image(data: bytes) -> None:
    with pytest.raises(ImageError):
        process_photo(data)
    with pytest.raises(ImageError):
        image_size(data)


def test_unsupported_decodable_format() -> None:
    tiff = encode(quadrants(32, 32), "TIFF")
    with pytest.raises(ImageError):
        process_photo(tiff)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
def test_truncated_images(fmt: str) -> None:
    data = encode(Image.effect_noise((256, 256), 50).convert("RGB"), fmt)
    with pytest.raises(ImageError):
        process_photo(data[: len(data) // 2])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "data",
    [
        png_header_only(11_000, 10_000),  # above our limit, below Pillow's own error
        png_header_only(30_000, 30_000),  # Pillow itself refuses this one
        jpeg_with_size(20_000, 20_000),
        jpeg_with_size(65_000, 2_000),
    ],
    ids=["png-110MP", "png-900MP", "jpeg-400MP", "jpeg-130MP"],
)
def test_decompression_bombs(data: bytes) -> None:
    with pytest.raises(ImageTooLargeError, match="too large"):
        process_photo(data)
    with pytest.raises(ImageTooLargeError, match="too large"):
        image_size(data)
    with pytest.raises(ImageTooLargeError, match="too large"):
        image_thumbnail(data)


def test_mutated_images_fail_cleanly() -> None:
    """Bit flips and truncations: a result or ImageError, never another exception."""
    base = quadrants(48, 32)
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    samples = [
        with_orientation(base, 6),
        encode(base, progressive=True),
        encode(rgba, "PNG"),
        encode(base.convert("P"), "GIF", save_all=True, append_images=[base.convert("P")]),
        encode(rgba, "WEBP"),
        encode(base, "BMP"),
    ]
    rnd = random.Random(1234)
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(300):
        data = bytearray(rnd.choice(samples))
        if rnd.random() < 0.3:
            data = data[: rnd.randrange(len(data))]
        else:
            for _ in range(rnd.randint(1, 6)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
        try:
            process_photo(bytes(data))
            outcomes["ok"] += 1
        except ImageError:
            outcomes["refused"] += 1
    assert outcomes["ok"] > 0 and outcomes["refused"] > 0


# --- image_size, image_thumbnail, looks_like_image -----------------------------------------


def test_image_size_reads_only_the_header() -> None:
    assert image_size(png_header_only(1234, 567)) == (1234, 567)  # no pixels to decode
    with pytest.raises(ImageError):
        process_photo(png_header_only(1234, 567))
    assert image_size(with_orientation(quadrants(300, 100), 8)) == (100, 300)
    assert image_size(encode(quadrants(300, 100), "WEBP")) == (300, 100)


def test_image_thumbnail() -> None:
    thumb = image_thumbnail(encode(quadrants(1000, 500), "PNG"))
    assert (thumb.type, thumb.w, thumb.h) == ("m", 320, 160)
    check_jpeg(thumb)

    small = image_thumbnail(encode(quadrants(90, 60), "PNG"), box=90, type_="s")
    assert (small.type, small.w, small.h) == ("s", 90, 60)  # never upscaled

    rotated = image_thumbnail(with_orientation(quadrants(1000, 500), 6), box=100)
    assert (rotated.w, rotated.h) == (50, 100)
    assert check_jpeg(rotated)


@pytest.mark.parametrize(
    ("mime", "data", "expected"),
    [
        ("image/jpeg", b"\xff\xd8\xff\xe0\0\x10JFIF", True),
        ("image/jpg", b"\xff\xd8\xff\xe1", True),
        ("image/png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", True),
        ("image/jpeg", b"\x89PNG\r\n\x1a\n", True),  # wrong subtype: the bytes decide
        ("application/octet-stream", b"GIF89a\x01\0", True),
        ("", b"RIFF\0\0\0\0WEBPVP8 ", True),
        ("IMAGE/BMP; charset=x", b"BM" + b"\0" * 12 + b"\x28\0\0\0", True),
        ("text/plain", b"BMW is a car brand, not a bitmap", False),
        ("image/bmp", b"BM" + b"\0" * 12 + b"\x99\0\0\0", False),
        ("video/mp4", b"\xff\xd8\xff\xe0", False),
        ("image/svg+xml", b"<svg xmlns=", False),
        ("image/tiff", b"II*\0", False),
        ("image/heic", b"\0\0\0\x18ftypheic", False),
        ("image/jpeg", b"", False),
        ("image/webp", b"RIFF\0\0\0\0WAVE", False),
    ],
)
def test_looks_like_image(mime: str, data: bytes, expected: bool) -> None:
    assert looks_like_image(mime, data) is expected


# --- stripped thumbnails -------------------------------------------------------------------


def rebuild(stripped: bytes) -> Image.Image:
    """What a client shows: the stripped payload behind Telethon's fixed header."""
    assert stripped[0] == 1
    img = decode(stripped_photo_to_jpg(stripped))
    assert img.format == "JPEG"
    assert img.size == (stripped[2], stripped[1])
    return img


def test_header_constant_is_the_clients_header() -> None:
    assert stripped_photo_to_jpg(b"\x01\0\0")[:-2] == imaging._STRIPPED_HEADER


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1, 1), (1, 1)),
        ((40, 40), (40, 40)),
        ((300, 200), (40, 27)),
        ((200, 300), (27, 40)),
        ((1000, 10), (40, 1)),
        ((33, 77), (17, 40)),
        ((17, 23), (17, 23)),
    ],
)
@pytest.mark.parametrize("colour", [RED, (30, 160, 90), (250, 240, 200)])
def test_stripped_round_trip(
    size: tuple[int, int], expected: tuple[int, int], colour: tuple[int, int, int]
) -> None:
    stripped = stripped_thumbnail(Image.new("RGB", size, colour))
    img = rebuild(stripped)
    assert img.size == expected
    assert close(mean_colour(img), colour, 24)


def test_stripped_keeps_the_picture() -> None:
    img = rebuild(stripped_thumbnail(quadrants(400, 300)))
    assert img.size == (40, 30)
    assert close(px(img, (8, 6)), RED, 60)
    assert close(px(img, (31, 6)), GREEN, 60)
    assert close(px(img, (8, 23)), BLUE, 60)
    assert close(px(img, (31, 23)), YELLOW, 60)


@pytest.mark.parametrize(
    "mode",
    ["RGBA", "RGBa", "LA", "La", "L", "P", "PA", "CMYK", "1", "I;16", "I", "F", "YCbCr"],
)
def test_stripped_from_any_mode(mode: str) -> None:
    img = rebuild(stripped_thumbnail(Image.new(mode, (80, 60))))
    assert img.size == (40, 30)


def test_stripped_does_not_touch_the_callers_image() -> None:
    source = Image.new("RGB", (30, 20), BLUE)
    stripped_thumbnail(source)
    assert not hasattr(source, "encoderinfo")


def test_process_photo_stripped() -> None:
    photo = process_photo(with_orientation(quadrants(800, 400), 6))
    img = rebuild(photo.stripped)
    assert img.size == (20, 40)  # displayed orientation: portrait
    assert close(px(img, (15, 5)), RED, 60)


# --- concurrency and speed -----------------------------------------------------------------


def test_threads_get_the_same_results() -> None:
    sources = [encode(quadrants(300 + 50 * i, 200), quality=90) for i in range(6)]
    sequential = [process_photo(s) for s in sources]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(process_photo, sources * 2))
    assert parallel == sequential * 2


@pytest.fixture(scope="module")
def camera_photo() -> bytes:
    """4000x3000 with sensor-like noise: about 3 MB at quality 90, like a phone's photo."""
    base = Image.linear_gradient("L").resize((4000, 3000))
    noise = Image.effect_noise((4000, 3000), 10)
    img = Image.merge("RGB", (base, noise, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    return encode(img, quality=90)


def test_twelve_megapixel_photo_is_fast(camera_photo: bytes) -> None:
    assert 2_500_000 < len(camera_photo) < 4_000_000
    start = time.perf_counter()
    photo = process_photo(camera_photo)
    elapsed = time.perf_counter() - start
    assert [(s.type, s.w, s.h) for s in photo.sizes][-1] == ("w", 2560, 1920)
    assert (photo.width, photo.height) == (4000, 3000)
    # ~0.5 s measured on a 2-core VM; the bound only catches a pathological regression.
    assert elapsed < 3.0
