"""Images judged by content, cached thumbnails, and safe names for received files.

Everything here handles files a stranger chose: the format comes from the bytes, never
the extension; an image whose header promises more pixels than we allow is refused
before it is decoded (a 100,000 x 100,000 PNG is a few hundred bytes on the wire and
40 GB in memory); and a received file name can never climb out of the download folder.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import re
import secrets
import threading
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from common.errors import UchatError
from common.fileio import make_private_dir

MAX_IMAGE_PIXELS = 50_000_000
#: Thumbnails are made without asking: never for more pixels than this (a 190 KiB PNG
#: can promise 80 MP and cost hundreds of MiB to decode). The user can still open it.
AUTO_THUMBNAIL_PIXELS = 20_000_000
SUPPORTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
THUMBNAIL_SIZE = (240, 240)
MAX_NAME_BYTES = 200  # leaves room for " (9999)" under the usual 255-byte limit
MAX_EXTENSION = 16
MAX_DUPLICATES = 10_000
FALLBACK_NAME = "download"

# Pillow's own guard: warns above this many pixels and raises above twice as many. We
# lower it from ~89 MP and, below, turn the warning into a refusal too.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

# Warning filters are process-wide; serialise our temporary "warnings are errors" scope.
_WARNINGS_LOCK = threading.Lock()
_DROPPED_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")  # controls, bidi overrides, surrogates
_ILLEGAL_CHARS = frozenset('<>:"/\\|?*')
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9]|conin\$|conout\$)$", re.I)


class NotAnImageError(UchatError):
    """The file is not a supported image, is damaged, or is too large to decode safely."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    format: str  # one of SUPPORTED_FORMATS
    width: int
    height: int

    @property
    def mime(self) -> str:
        return Image.MIME[self.format]


def _inspect(source: Path | io.BytesIO, max_pixels: int) -> ImageInfo | None:
    """Open, size-check and verify; any failure at all means "not an image we accept"."""
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source, formats=SUPPORTED_FORMATS) as image:
                width, height = image.size
                if image.format not in SUPPORTED_FORMATS or width * height > max_pixels:
                    return None
                if width <= 0 or height <= 0:
                    return None
                info = ImageInfo(image.format, width, height)
                image.verify()
        # Pillow parsing hostile bytes can raise almost anything (OSError, SyntaxError,
        # struct.error, ValueError, DecompressionBomb*...): all of them are a refusal.
        except Exception:
            return None
    return info


def detect_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageInfo | None:
    """The image's format and size if it is a PNG, JPEG, GIF, BMP or WEBP we may decode."""
    return _inspect(Path(path), max_pixels)


def thumbnail(
    path: Path,
    cache_dir: Path,
    max_size: tuple[int, int] = THUMBNAIL_SIZE,
    max_pixels: int = AUTO_THUMBNAIL_PIXELS,
) -> Path:
    """A PNG no larger than `max_size`, cached under the SHA-256 of the source's bytes.

    The bytes are read once, so the name always describes what was decoded. The cache
    folder is 0700 and each thumbnail 0600: they show what the user received.
    Raises `NotAnImageError` when `path` is not an image of at most `max_pixels`.
    """
    data = Path(path).read_bytes()
    width, height = max_size
    target = Path(cache_dir) / f"{hashlib.sha256(data).hexdigest()}-{width}x{height}.png"
    if target.is_file():
        return target
    if _inspect(io.BytesIO(data), max_pixels) is None:
        raise NotAnImageError(f"not a supported image: {Path(path).name}")
    try:
        small = _render_thumbnail(data, max_size)
    except Exception as error:  # the header verified but the pixels did not decode
        raise NotAnImageError(f"image cannot be decoded: {Path(path).name}") from error
    make_private_dir(target.parent)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            small.save(out, format="PNG")
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def _render_thumbnail(data: bytes, max_size: tuple[int, int]) -> Image.Image:
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as image:
            image.draft("RGB", max_size)  # JPEG decodes at a reduced scale: much faster
            upright = ImageOps.exif_transpose(image)
            if upright.mode not in ("RGB", "RGBA", "L", "LA"):
                upright = upright.convert("RGBA")
            upright.thumbnail(max_size)
            return upright


# ---------------------------------------------------------------- received file names


def _clean_name(name: str) -> str:
    """The last path component with controls, bidi tricks and reserved characters removed."""
    base = re.split(r"[/\\]", unicodedata.normalize("NFC", name))[-1]
    kept = (
        "_" if ch in _ILLEGAL_CHARS else ch
        for ch in base
        if unicodedata.category(ch) not in _DROPPED_CATEGORIES
    )
    # Leading dots hide files (and "." / ".." are directories); Windows drops trailing ones.
    return "".join(kept).strip(" .")


def _split_extension(name: str) -> tuple[str, str]:
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > MAX_EXTENSION:
        return name, ""
    return stem, f".{extension}"


def _truncate_utf8(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def sanitize_filename(name: str) -> tuple[str, str]:
    """(stem, extension) safe as one file name on Linux, macOS and Windows."""
    stem, extension = _split_extension(_clean_name(name))
    if _WINDOWS_RESERVED.match(stem.split(".")[0]):
        stem = f"_{stem}"
    extension = _truncate_utf8(extension, MAX_EXTENSION + 1)
    stem = _truncate_utf8(stem, MAX_NAME_BYTES - len(extension.encode("utf-8"))).rstrip(" .")
    return (stem or FALLBACK_NAME), extension


def safe_download_path(dest_dir: Path, name: str) -> Path:
    """A new, empty file in `dest_dir` named after `name`, never anywhere else.

    The file is created (O_EXCL, mode 0600) so two downloads of "a.txt" cannot both pick
    "a.txt"; write into it or `os.replace` a finished temp file over it.
    """
    root = Path(dest_dir)
    if not root.exists():
        make_private_dir(root)
    root = root.resolve()
    stem, extension = sanitize_filename(name)
    numbered = (f"{stem} ({number}){extension}" for number in range(1, MAX_DUPLICATES))
    last_resort = f"{stem}-{secrets.token_hex(8)}{extension}"
    for candidate in itertools.chain([f"{stem}{extension}"], numbered, [last_resort]):
        path = root / candidate
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # also a symlink, dangling or not: never followed
            continue
        os.close(fd)
        if path.resolve().parent != root:  # cannot happen: the name has no separators
            path.unlink()
            raise ValueError(f"unsafe download name: {name!r}")
        return path
    raise FileExistsError(f"no free name for {stem}{extension} in {root}")
