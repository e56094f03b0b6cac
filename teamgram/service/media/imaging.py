"""Image processing for the media service: photo size ladders, thumbnails, stripped thumbnails.

Everything here is pure and synchronous: callers run it in a worker thread (Pillow releases the
GIL while decoding, resampling and encoding, so photos really are processed in parallel).

Input is untrusted, so decoding is limited to a few raster formats (Pillow's other plugins, EPS
with Ghostscript among them, are never reached), an image is refused above ``MAX_PIXELS`` before
a single pixel is decoded, and every decoder failure surfaces as ``ImageError``. Output JPEGs
carry no metadata: EXIF (GPS position, camera serial) and comments of the upload never reach
other users; the orientation is applied to the pixels and embedded colour profiles are converted
to sRGB instead.
"""

from __future__ import annotations

import io
import itertools
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO

from PIL import Image, JpegImagePlugin, UnidentifiedImageError

try:
    from PIL import ImageCms
except ImportError:  # Pillow built without littlecms: embedded profiles are then ignored
    ImageCms = None  # type: ignore[assignment]

__all__ = [
    "JPEG_QUALITY",
    "MAX_PIXELS",
    "PHOTO_LADDER",
    "PROFILE_LADDER",
    "STRIPPED_BOX",
    "STRIPPED_TYPE",
    "SUPPORTED_FORMATS",
    "ImageError",
    "ImageTooLargeError",
    "ProcessedPhoto",
    "SizedJpeg",
    "image_size",
    "image_thumbnail",
    "ladder_dimensions",
    "looks_like_image",
    "process_photo",
    "stripped_thumbnail",
]

# PhotoSize.type values and the square box each size is fitted into (api/files#photosizetype).
PHOTO_LADDER: tuple[tuple[str, int], ...] = (
    ("s", 100),
    ("m", 320),
    ("x", 800),
    ("y", 1280),
    ("w", 2560),
)
# Profile photos: clients crop them square before upload; the server only fits them.
PROFILE_LADDER: tuple[tuple[str, int], ...] = (("a", 160), ("b", 320), ("c", 640))

MAX_PIXELS = 100_000_000
"""Width x height above which an image is refused unread (a decoded 100 MP image is ~400 MB)."""

JPEG_QUALITY = 87
STRIPPED_TYPE = "i"
STRIPPED_BOX = 40
"""A stripped thumbnail fits this box: clients show it blurred while the real size loads."""

SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP")
"""Pillow formats decoded at all (JPEG includes MPO, the multi-picture JPEG of many cameras)."""

# The first resampling step (decoded image -> largest size) touches every source pixel and is
# most of the work: bicubic costs ~25% less than Lanczos there (12 MP -> 5 MP: 180 vs 240 ms)
# and looks the same at such ratios; the reducing gap lets a source six or more times larger
# be box-reduced first. Later steps start from a few times fewer pixels: Lanczos is cheap.
_FIRST_FILTER = Image.Resampling.BICUBIC
_FIRST_REDUCING_GAP = 3.0
_STEP_FILTER = Image.Resampling.LANCZOS

_EXIF_ORIENTATION = 0x0112
_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# What Pillow's decoders raise on malformed input: ~20,000 mutated files of every supported
# format (truncations, byte flips) raised nothing else.
_DECODER_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
)


class ImageError(ValueError):
    """The data is not an image we decode: unknown or unsupported format, corrupt, too large."""


class ImageTooLargeError(ImageError):
    """More than ``MAX_PIXELS`` pixels (a decompression bomb, or just too big)."""


@dataclass(frozen=True)
class SizedJpeg:
    """One JPEG of a photo, as a ``photoSize`` describes it (``size`` is ``len(data)``)."""

    type: str
    w: int
    h: int
    data: bytes


@dataclass(frozen=True)
class ProcessedPhoto:
    """A photo ready to store: its displayed size, its JPEG sizes (smallest first), stripped."""

    width: int
    height: int
    sizes: list[SizedJpeg]
    stripped: bytes


# --- geometry ------------------------------------------------------------------------------


def _fit(width: int, height: int, box: int) -> tuple[int, int]:
    """Scale (width, height) down to fit a box x box square, keeping the aspect ratio."""
    longest = max(width, height)
    if longest <= box:
        return width, height
    return max(1, round(width * box / longest)), max(1, round(height * box / longest))


def _check_ladder(ladder: Sequence[tuple[str, int]]) -> None:
    if not ladder:
        raise ValueError("empty ladder")
    if any(box < 1 for _, box in ladder) or any(
        a[1] >= b[1] for a, b in itertools.pairwise(ladder)
    ):
        raise ValueError("ladder boxes must be positive and increasing")


def ladder_dimensions(
    width: int, height: int, ladder: Sequence[tuple[str, int]] = PHOTO_LADDER
) -> list[tuple[str, int, int]]:
    """The (type, w, h) a ladder yields for a displayed size, smallest first.

    Every size whose box is smaller than the longest side is the image fitted into it; the first
    box that holds the whole image gets it at its own resolution and ends the ladder (no
    upscaling), so a tiny image still gets the first type.
    """
    _check_ladder(ladder)
    if width < 1 or height < 1:
        raise ValueError("empty image")
    out: list[tuple[str, int, int]] = []
    for type_, box in ladder:
        if box < max(width, height):
            out.append((type_, *_fit(width, height, box)))
        else:
            out.append((type_, width, height))
            break
    return out


# --- opening and decoding ------------------------------------------------------------------


@contextmanager
def _open(source: Path | bytes) -> Iterator[Image.Image]:
    """Open lazily (header only), refusing unsupported formats and oversized images."""
    fp: BinaryIO
    if isinstance(source, bytes | bytearray | memoryview):
        fp = io.BytesIO(source)
    else:
        fp = open(source, "rb")  # closed by the with below; a missing file is an OSError
    with fp:
        try:
            img = Image.open(fp, formats=SUPPORTED_FORMATS)
        except UnidentifiedImageError as e:
            raise ImageError("not an image in a supported format") from e
        except Image.DecompressionBombError as e:
            raise ImageTooLargeError(f"image too large (> {MAX_PIXELS} pixels)") from e
        except _DECODER_ERRORS as e:
            raise ImageError(f"corrupt image: {e}") from e
        with img:
            width, height = img.size
            if width < 1 or height < 1:
                raise ImageError("image has no pixels")
            if width * height > MAX_PIXELS:
                raise ImageTooLargeError(
                    f"image too large ({width}x{height} > {MAX_PIXELS} pixels)"
                )
            yield img


def _load(img: Image.Image) -> None:
    """Decode the pixels (the first frame of an animation)."""
    try:
        img.load()
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"image too large (> {MAX_PIXELS} pixels)") from e
    except _DECODER_ERRORS as e:
        raise ImageError(f"corrupt image: {e}") from e


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8) from the metadata already read; never forces a decode.

    (PNG's getexif() would decode the whole image to look for an eXIf chunk after the pixels.)
    """
    raw = img.info.get("exif")
    if not isinstance(raw, bytes) or not raw:
        return 1
    try:
        exif = Image.Exif()
        exif.load(raw)
        value = exif.get(_EXIF_ORIENTATION, 1)
    except _DECODER_ERRORS:
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _swaps_axes(orientation: int) -> bool:
    return orientation in (5, 6, 7, 8)


def _flatten(img: Image.Image) -> Image.Image:
    """Reduce any decoded mode to RGB, L or CMYK; transparency is composited onto white."""
    mode = img.mode
    if "transparency" in img.info and mode in ("P", "L", "RGB", "1", "I", "I;16"):
        img = img.convert("RGBA")
    elif mode in ("RGB", "L", "CMYK"):
        return img
    elif mode == "P":
        return img.convert("RGB")
    elif mode == "1":
        return img.convert("L")
    elif mode == "I" or mode.startswith("I;16"):
        # 16-bit greyscale (PNG): scale to 8 bits rather than clipping everything to white.
        return img.convert("I").point(lambda v: v / 256).convert("L")
    elif mode == "La":  # premultiplied: Pillow converts it to nothing but LA
        img = img.convert("LA")
    elif mode not in ("RGBA", "RGBa", "LA", "PA"):
        return img.convert("RGB")
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    out = Image.new("RGB", rgba.size, (255, 255, 255))
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


_CMS_ERRORS: tuple[type[Exception], ...] = _DECODER_ERRORS + (
    (ImageCms.PyCMSError,) if ImageCms is not None else ()
)


@cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert to sRGB RGB, honouring an embedded colour profile (e.g. Display P3 of phones).

    Clients treat untagged JPEGs as sRGB, and we drop the profile, so the pixels must be
    converted. An sRGB profile is skipped (the common case costs nothing) and a broken one is
    ignored rather than failing the upload.
    """
    if icc and ImageCms is not None:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb_already = (
                img.mode == "RGB" and "srgb" in ImageCms.getProfileDescription(profile).lower()
            )
            if not srgb_already:
                converted = ImageCms.profileToProfile(
                    img, profile, _srgb_profile(), outputMode="RGB"
                )
                if converted is not None:
                    img = converted
        except _CMS_ERRORS:
            pass
    return img if img.mode == "RGB" else img.convert("RGB")


def _render(
    source: Path | bytes, ladder: Sequence[tuple[str, int]]
) -> tuple[int, int, list[tuple[str, Image.Image]]]:
    """Decode once and resample into every ladder size; returns the displayed size too.

    JPEGs are decoded at a reduced DCT scale (1/2, 1/4, 1/8) when the largest size allows.
    Each smaller size is resampled from the next larger one, which is cheaper than going back
    to the full image every time and, one Lanczos step at a time, just as sharp.
    """
    _check_ladder(ladder)  # a caller's mistake, found before any decoding
    with _open(source) as img:
        stored_w, stored_h = img.size
        if isinstance(img, JpegImagePlugin.JpegImageFile):
            swap = _swaps_axes(_orientation(img))
            width, height = (stored_h, stored_w) if swap else (stored_w, stored_h)
            _, top_w, top_h = ladder_dimensions(width, height, ladder)[-1]
            try:
                img.draft("RGB", (top_h, top_w) if swap else (top_w, top_h))
            except _DECODER_ERRORS as e:
                raise ImageError(f"corrupt image: {e}") from e
        _load(img)
        orientation = _orientation(img)  # again: a PNG eXIf chunk may follow the pixels
        swap = _swaps_axes(orientation)
        width, height = (stored_h, stored_w) if swap else (stored_w, stored_h)
        dims = ladder_dimensions(width, height, ladder)
        icc = img.info.get("icc_profile")
        pixels = _flatten(img)

    rendered: list[tuple[str, Image.Image]] = []
    previous: Image.Image | None = None
    for type_, w, h in reversed(dims):
        if previous is None:
            target = (h, w) if swap else (w, h)
            if pixels.size != target:
                pixels = pixels.resize(target, _FIRST_FILTER, reducing_gap=_FIRST_REDUCING_GAP)
            if orientation in _TRANSPOSE:
                pixels = pixels.transpose(_TRANSPOSE[orientation])
            current = _to_srgb(pixels, icc if isinstance(icc, bytes) else None)
        elif previous.size == (w, h):
            current = previous
        else:
            current = previous.resize((w, h), _STEP_FILTER)
        rendered.append((type_, current))
        previous = current
    rendered.reverse()
    return width, height, rendered


def _encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """Baseline JPEG with optimised Huffman tables (a few % smaller, still fast), no metadata."""
    buf = io.BytesIO()
    # comment=b"" stops Pillow copying a COM segment over from the source's info.
    img.save(buf, "JPEG", quality=quality, optimize=True, comment=b"")
    return buf.getvalue()


def _check_quality(quality: int) -> None:
    if not 1 <= quality <= 100:
        raise ValueError("JPEG quality must be within 1..100")


# --- public operations ---------------------------------------------------------------------


def process_photo(
    source: Path | bytes,
    ladder: Sequence[tuple[str, int]] = PHOTO_LADDER,
    quality: int = JPEG_QUALITY,
) -> ProcessedPhoto:
    """Turn an uploaded photo into its ladder of JPEG sizes and a stripped thumbnail.

    The EXIF orientation is applied, transparency goes onto white, the output is sRGB JPEG.
    ``width``/``height`` are the displayed size of the original (after orientation).
    """
    _check_quality(quality)
    width, height, rendered = _render(source, ladder)
    sizes = [
        SizedJpeg(type_, img.width, img.height, _encode_jpeg(img, quality))
        for type_, img in rendered
    ]
    return ProcessedPhoto(width, height, sizes, stripped_thumbnail(rendered[0][1]))


def image_thumbnail(source: Path | bytes, box: int = 320, type_: str = "m") -> SizedJpeg:
    """A JPEG thumbnail fitted into ``box`` (never upscaled).

    For documents that are images, and to normalise the thumbs clients upload with documents.
    """
    _, _, rendered = _render(source, ((type_, box),))
    _, img = rendered[0]
    return SizedJpeg(type_, img.width, img.height, _encode_jpeg(img, JPEG_QUALITY))


def image_size(source: Path | bytes) -> tuple[int, int]:
    """The displayed (width, height), EXIF orientation applied, from the header alone.

    Images ``process_photo`` would refuse (unsupported, above ``MAX_PIXELS``) raise here too.
    """
    with _open(source) as img:
        width, height = img.size
        return (height, width) if _swaps_axes(_orientation(img)) else (width, height)


_GENERIC_MIME = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def _sniff(first_bytes: bytes) -> str | None:
    """The supported format the leading bytes announce, if any."""
    b = bytes(first_bytes[:32])
    if b.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if b.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if b.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if b.startswith(b"RIFF") and b[8:12] == b"WEBP":
        return "WEBP"
    # "BM" alone matches plenty of text; the DIB header size pins a real bitmap down.
    if b.startswith(b"BM") and len(b) >= 18:
        if int.from_bytes(b[14:18], "little") in (12, 40, 52, 56, 64, 108, 124):
            return "BMP"
    return None


def looks_like_image(mime: str, first_bytes: bytes) -> bool:
    """Whether a document should be treated as an image we can decode (for thumbnails).

    The leading bytes decide (clients' MIME types are often wrong: image/jpg, a PNG named
    .jpg); a declared type is only trusted to say "not an image" when it names another kind
    of media, so a video that happens to start like a JPEG is left alone.
    """
    declared = mime.split(";", 1)[0].strip().lower()
    if not (declared.startswith("image/") or declared in _GENERIC_MIME):
        return False
    return _sniff(first_bytes) is not None


# --- stripped thumbnails -------------------------------------------------------------------

# The JPEG header clients put in front of a stripped thumbnail (tdesktop's
# Images::FromInlineBytes, Telethon's stripped_photo_to_jpg): JFIF, the IJG tables scaled
# for quality 20, a 3-component baseline frame with 4:2:0 sampling (height and width bytes
# left 0, taken from bytes 1 and 2 of the payload) and the standard Huffman tables of
# ITU T.81 Annex K. The payload is the entropy-coded data that follows it; the client adds
# FF D9. Public protocol data, held as bytes and parsed at import.
_STRIPPED_HEADER = bytes.fromhex(
    "".join(
        (
            "ffd8",  # SOI
            "ffe000104a46494600010100000100010000",  # APP0 JFIF 1.1, 1:1 aspect
            # DQT 0 (luminance), zigzag order
            "ffdb004300281c1e231e19282321232d2b28303c64413c37373c7b585d4964918099968f808c8aa0"
            "b4e6c3a0aadaad8a8cc8ffcbdaeef5ffffff9bc1fffffffaffe6fdfff8",
            # DQT 1 (chrominance)
            "ffdb0043012b2d2d3c353c76414176f8a58ca5f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8"
            "f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8f8",
            # SOF0: 8 bit, height 0, width 0, Y 2x2 q0, Cb 1x1 q1, Cr 1x1 q1
            "ffc00011080000000003012200021101031101",
            # DHT DC 0
            "ffc4001f0000010501010101010100000000000000000102030405060708090a0b",
            # DHT AC 0
            "ffc400b5100002010303020403050504040000017d01020300041105122131410613516107227114"
            "328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a4344"
            "45464748494a535455565758595a636465666768696a737475767778797a838485868788898a9293"
            "9495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7"
            "d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa",
            # DHT DC 1
            "ffc4001f0100030101010101010101010000000000000102030405060708090a0b",
            # DHT AC 1
            "ffc400b5110002010204040304070504040001027700010203110405213106124151076171132232"
            "8108144291a1b1c109233352f0156272d10a162434e125f11718191a262728292a35363738393a43"
            "4445464748494a535455565758595a636465666768696a737475767778797a82838485868788898a"
            "92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5"
            "d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9fa",
            # SOS: Y tables 0/0, Cb 1/1, Cr 1/1, spectral 0..63, no approximation
            "ffda000c03010002110311003f00",
        )
    )
)
_STRIPPED_PREFIX = 1  # stripped[0]: the format version clients check


def _split_header(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """A JPEG's marker segments up to and including SOS, and where the scan data starts."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    segments: list[tuple[int, bytes]] = []
    pos = 2
    while True:
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise ValueError("malformed JPEG header")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > len(data):
            raise ValueError("malformed JPEG segment")
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
        if marker == 0xDA:
            return segments, pos


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _decoding_tables(segments: list[tuple[int, bytes]]) -> tuple[object, ...]:
    """Everything a decoder takes from a header except the image size.

    Two headers with equal results decode the same scan data identically, whatever APPn or
    COM segments either carries.
    """
    qtables: dict[int, bytes] = {}
    htables: dict[int, bytes] = {}
    frame: tuple[int, bytes] | None = None
    scan = b""
    restart = b""
    for marker, body in segments:
        if marker == 0xDB:
            while body:
                precision = body[0] >> 4
                n = 64 * (1 + precision)
                qtables[body[0] & 0x0F] = body[: 1 + n]
                body = body[1 + n :]
        elif marker == 0xC4:
            while body:
                n = sum(body[1:17])
                htables[body[0]] = body[1 : 17 + n]
                body = body[17 + n :]
        elif marker in _SOF_MARKERS:
            frame = (marker, body[:1] + body[5:])  # precision, components; not the size
        elif marker == 0xDA:
            scan = body
        elif marker == 0xDD:
            restart = body
    return frame, sorted(qtables.items()), sorted(htables.items()), scan, restart


def _zigzag_order() -> list[int]:
    """Row-major index of each of the 64 coefficients in JPEG zigzag order."""
    order: list[int] = []
    for diagonal in range(15):
        rows = list(range(max(0, diagonal - 7), min(diagonal, 7) + 1))
        if diagonal % 2 == 0:
            rows.reverse()
        order.extend(row * 8 + diagonal - row for row in rows)
    return order


def _stripped_qtables() -> list[list[int]]:
    """The header's quantisation tables in the row-major order Pillow's qtables= takes."""
    segments, _ = _split_header(_STRIPPED_HEADER)
    tables: dict[int, list[int]] = {}
    order = _zigzag_order()
    for marker, body in segments:
        if marker == 0xDB:
            table = [0] * 64
            for zz, natural in enumerate(order):
                table[natural] = body[1 + zz]
            tables[body[0] & 0x0F] = table
    return [tables[0], tables[1]]


_STRIPPED_TABLES = _decoding_tables(_split_header(_STRIPPED_HEADER)[0])
_STRIPPED_QTABLES = _stripped_qtables()


def stripped_thumbnail(img: Image.Image) -> bytes:
    """A ``photoStrippedSize`` payload: a JPEG fitting 40x40 without its (fixed) header.

    ``img`` is taken as displayed (no EXIF orientation applied). The JPEG is encoded with
    exactly the tables of the header clients rebuild it with, and that is checked on every
    call: a libjpeg that chose other tables would make every client show garbage.
    """
    flat = _flatten(img)
    size = _fit(flat.width, flat.height, STRIPPED_BOX)
    if flat.size != size:
        small = flat.resize(size, _STEP_FILTER, reducing_gap=2.0)
    else:
        small = flat.copy()  # save() sets attributes on the image: never on the caller's
    if small.mode != "RGB":
        small = small.convert("RGB")
    buf = io.BytesIO()
    small.save(
        buf,
        "JPEG",
        qtables=_STRIPPED_QTABLES,
        subsampling="4:2:0",
        optimize=False,
        progressive=False,
        comment=b"",
    )
    data = buf.getvalue()
    segments, scan_start = _split_header(data)
    if _decoding_tables(segments) != _STRIPPED_TABLES or not data.endswith(b"\xff\xd9"):
        raise RuntimeError("the JPEG encoder ignored the stripped-thumbnail tables")
    width, height = small.size
    return bytes((_STRIPPED_PREFIX, height, width)) + data[scan_start:-2]
