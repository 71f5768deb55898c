"""Reading a user's picture safely: PNG, WebP and JPEG through Pillow, layered PSD through psd-tools.

Sizes are checked from the file header before any pixel is decoded, so a 30000x30000 picture or a
decompression bomb (a few KB that inflate to gigabytes) is refused without using the memory.
Every failure is a one-line UserError that names the file.
"""
from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liveavatar.errors import UserError

#: Longest side and pixel count accepted. Art for a live avatar rarely needs more than 4k; the
#: importer scales the art down to MAX_WORK_SIDE anyway.
MAX_SIDE = 8192
MAX_PIXELS = 40_000_000
#: Bytes of a picture file accepted at all (a PSD with many layers can be large).
MAX_FILE_BYTES = 200 * 1024 * 1024
FORMATS = ("PNG", "WEBP", "JPEG")


@dataclass
class Layer:
    """One PSD layer, composited onto the full canvas (straight-alpha RGBA uint8, H x W x 4)."""
    name: str
    part: str          # the body part its name says (see liveavatar.authoring.psd.PART_NAMES)
    rgba: np.ndarray
    z: int             # draw order in the file (0 = bottom)


@dataclass
class Picture:
    """A picture as read: RGBA uint8 (H, W, 4), straight alpha; `layers` only for a layered PSD."""
    path: Path
    format: str
    rgba: np.ndarray
    has_alpha: bool
    layers: list[Layer] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgba.shape[1], self.rgba.shape[0]


def one_line(text: object, limit: int = 200) -> str:
    """Text echoed in an error: newlines and control characters removed, length capped."""
    s = "".join(c if c.isprintable() else " " for c in str(text))
    return s if len(s) <= limit else s[:limit - 3] + "..."


def check_dimensions(where: str, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise UserError(f"{where}: the picture is empty ({width}x{height} px)")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise UserError(f"{where}: {width}x{height} px is too large (at most {MAX_SIDE} px a side and "
                        f"{MAX_PIXELS // 1_000_000} MP); scale it down first")


def _psd_header(data: bytes, where: str) -> tuple[int, int]:
    """(width, height) from the 26-byte PSD/PSB header, read before psd-tools parses anything."""
    if len(data) < 26:
        raise UserError(f"{where}: a truncated PSD file")
    _sig, version, _reserved, _channels, height, width, _depth, _mode = struct.unpack(">4sH6sHIIHH", data[:26])
    if version not in (1, 2):
        raise UserError(f"{where}: unknown PSD version {version}")
    return width, height


def _psd_truncated(path: Path, header: bytes) -> bool:
    """True when the file ends before the sections its header and section lengths declare, the
    merged image data included (psd-tools reads a truncated file without complaint)."""
    version, channels, height, width, depth = struct.unpack(">4xH6xHIIH", header[:24])
    size = path.stat().st_size
    with path.open("rb") as f:
        pos = 26
        for long_length in (False, False, version == 2):   # colour mode data, image resources, layers
            f.seek(pos)
            raw = f.read(8 if long_length else 4)
            if len(raw) != (8 if long_length else 4):
                return True
            pos += len(raw) + int.from_bytes(raw, "big")
            if pos > size:
                return True
        f.seek(pos)
        code = f.read(2)
        if len(code) != 2:
            return True
        compression = int.from_bytes(code, "big")
        rows = channels * height
        if compression == 0:
            need = rows * ((width * depth + 7) // 8)
        elif compression == 1:       # RLE: a table of per-row byte counts, then the rows
            width_bytes = 4 if version == 2 else 2
            table = f.read(rows * width_bytes)
            if len(table) != rows * width_bytes:
                return True
            counts = np.frombuffer(table, dtype=">u4" if version == 2 else ">u2")
            need = len(table) + int(counts.sum(dtype=np.int64))
        else:
            return False             # zip-compressed data: psd-tools checks it while inflating
        return pos + 2 + need > size


def read_picture(path: Path | str) -> Picture:
    """Read a PNG, WebP, JPEG or layered PSD. UserError (one line) for anything else or too large."""
    path = Path(path)
    where = one_line(path)
    try:
        st = path.stat()
    except OSError as e:
        raise UserError(f"{where}: cannot read the file ({one_line(e.strerror or e)})") from None
    if not path.is_file():
        raise UserError(f"{where}: not a file")
    if st.st_size == 0:
        raise UserError(f"{where}: the file is empty")
    if st.st_size > MAX_FILE_BYTES:
        raise UserError(f"{where}: {st.st_size // (1024 * 1024)} MB is too large (at most "
                        f"{MAX_FILE_BYTES // (1024 * 1024)} MB)")
    with path.open("rb") as f:
        head = f.read(32)
    if head.startswith(b"8BPS"):
        width, height = _psd_header(head, where)
        check_dimensions(where, width, height)
        if _psd_truncated(path, head):
            raise UserError(f"{where}: the PSD file is truncated (it ends before its picture data does)")
        from liveavatar.authoring.psd import read_psd
        return read_psd(path, where)
    return _read_pillow(path, where)


def _read_pillow(path: Path, where: str) -> Picture:
    from PIL import Image, UnidentifiedImageError

    try:
        # Pillow's own bomb guard stays on as a second line of defence (it raises at 2x this).
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        if isinstance(e, UnidentifiedImageError):
            raise UserError(f"{where}: not a picture (PNG, WebP, JPEG or PSD expected)") from None
        raise UserError(f"{where}: too large, refused as a possible decompression bomb before decoding "
                        f"({one_line(e)})") from None
    except OSError as e:
        raise UserError(f"{where}: not a readable picture ({one_line(e)})") from None
    with im:
        if im.format not in FORMATS:
            raise UserError(f"{where}: {im.format} pictures are not supported (PNG, WebP, JPEG or PSD)")
        # Header only so far: refuse huge pictures before a single pixel is decoded.
        check_dimensions(where, *im.size)
        fmt = im.format
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)  # an animated PNG/WebP: its first frame is the character
        try:
            from PIL import ImageOps
            im.load()
            upright = ImageOps.exif_transpose(im) or im  # phone photos stand upright
            has_alpha = upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info)
            rgba = np.asarray(upright.convert("RGBA"), dtype=np.uint8).copy()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise UserError(f"{where}: the picture is damaged or truncated ({one_line(e)})") from None
    return Picture(path=path, format=fmt, rgba=rgba, has_alpha=has_alpha)
