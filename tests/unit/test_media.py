"""media: image detection by content, bomb refusal, thumbnails, safe download names."""

from __future__ import annotations

import os
import stat
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from client.core.media import (
    MAX_IMAGE_PIXELS,
    MAX_NAME_BYTES,
    ImageInfo,
    NotAnImageError,
    detect_image,
    safe_download_path,
    thumbnail,
)


def make_image(path: Path, fmt: str, size: tuple[int, int] = (64, 48)) -> Path:
    image = Image.new("RGB", size, (200, 30, 90))
    image.save(path, format=fmt)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def crafted_png(path: Path, width: int, height: int) -> Path:
    """A well-formed PNG header claiming width x height, with one tiny IDAT (no pixels)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )
    path.write_bytes(body)
    return path


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("fmt", "suffix"),
    [("PNG", ".png"), ("JPEG", ".jpg"), ("GIF", ".gif"), ("BMP", ".bmp"), ("WEBP", ".webp")],
)
def test_real_images_are_detected_by_content(tmp_path: Path, fmt: str, suffix: str) -> None:
    path = make_image(tmp_path / f"picture{suffix}", fmt)
    assert detect_image(path) == ImageInfo(fmt, 64, 48)
    # the extension is irrelevant: the same bytes under a misleading name
    renamed = path.rename(tmp_path / "picture.txt")
    assert detect_image(renamed) == ImageInfo(fmt, 64, 48)


def test_mime_type() -> None:
    assert ImageInfo("PNG", 1, 1).mime == "image/png"
    assert ImageInfo("JPEG", 1, 1).mime == "image/jpeg"


@pytest.mark.parametrize(
    "content",
    [
        b"just some text, honestly\n",
        b"",
        b"\x89PNG\r\n\x1a\n",  # a signature and nothing else
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        b"GIF89a\xff\xff",
        b"%PDF-1.7\n",
    ],
)
def test_non_images_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.png"
    path.write_bytes(content)
    assert detect_image(path) is None


def test_unsupported_image_formats_are_refused(tmp_path: Path) -> None:
    assert detect_image(make_image(tmp_path / "x.tiff", "TIFF")) is None


def test_truncated_png_is_refused(tmp_path: Path) -> None:
    good = make_image(tmp_path / "good.png", "PNG", (300, 300))
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:-30])
    assert detect_image(bad) is None


def test_crafted_header_is_accepted_at_a_small_size(tmp_path: Path) -> None:
    """Proves the crafted files below are refused for their size, not their shape."""
    assert detect_image(crafted_png(tmp_path / "ok.png", 100, 100)) == ImageInfo("PNG", 100, 100)


def test_decompression_bomb_error_is_refused(tmp_path: Path) -> None:
    bomb = crafted_png(tmp_path / "bomb.png", 100_000, 100_000)  # Pillow raises its Error
    assert detect_image(bomb) is None
    assert detect_image(bomb, max_pixels=10**12) is None
    with pytest.raises(NotAnImageError):
        thumbnail(bomb, tmp_path / "cache", max_pixels=10**12)


def test_decompression_bomb_warning_is_refused(tmp_path: Path) -> None:
    # Between MAX_IMAGE_PIXELS and twice that, Pillow only warns: we must still refuse,
    # even when our own limit is raised out of the way.
    side = int((1.5 * MAX_IMAGE_PIXELS) ** 0.5)
    bomb = crafted_png(tmp_path / "bomb.png", side, side)
    assert detect_image(bomb, max_pixels=10**12) is None


def test_own_pixel_limit(tmp_path: Path) -> None:
    path = make_image(tmp_path / "p.png", "PNG", (100, 100))
    assert detect_image(path, max_pixels=10_000) is not None
    assert detect_image(path, max_pixels=9_999) is None


# ---------------------------------------------------------------- thumbnails


def test_thumbnail_is_a_bounded_png_cached_by_content(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    source = make_image(tmp_path / "big.jpg", "JPEG", (1200, 600))
    thumb = thumbnail(source, cache)
    assert thumb.parent == cache and thumb.suffix == ".png"
    with Image.open(thumb) as image:
        assert image.format == "PNG"
        assert image.size == (240, 120)
    modified = thumb.stat().st_mtime_ns
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(source.read_bytes())
    assert thumbnail(copy, cache) == thumb  # same content: reused, not re-rendered
    assert thumb.stat().st_mtime_ns == modified
    other = thumbnail(make_image(tmp_path / "o.png", "PNG", (50, 500)), cache, (100, 100))
    assert other != thumb
    with Image.open(other) as image:
        assert image.size == (10, 100)
    assert sorted(p.suffix for p in cache.iterdir()) == [".png", ".png"]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "BMP"])
def test_thumbnail_of_other_formats(tmp_path: Path, fmt: str) -> None:
    source = make_image(tmp_path / "source", fmt, (480, 480))
    with Image.open(thumbnail(source, tmp_path / "cache")) as image:
        assert image.size == (240, 240)


def test_thumbnail_honours_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    source = tmp_path / "phone.jpg"
    Image.new("RGB", (400, 200)).save(source, format="JPEG", exif=exif)
    with Image.open(thumbnail(source, tmp_path / "cache")) as image:
        assert image.size == (120, 240)


def test_thumbnail_of_a_non_image_raises(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(NotAnImageError):
        thumbnail(path, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------- download names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/etc/shadow", "shadow"),
        ("..\\..\\windows\\system32\\x.dll", "x.dll"),
        ("..\\x", "x"),
        ("..", "download"),
        (".", "download"),
        ("", "download"),
        ("   ", "download"),
        ("dir/", "download"),
        (".bashrc", "bashrc"),
        ("...hidden.txt", "hidden.txt"),
        ("evil\x00.txt", "evil.txt"),
        ("line\nbreak\t.txt", "linebreak.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # right-to-left override removed
        ('a<b>c:d"e|f?g*h.txt', "a_b_c_d_e_f_g_h.txt"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("com1.tar.gz", "_com1.tar.gz"),
        ("name. . .", "name"),
        ("照片 2024.jpg", "照片 2024.jpg"),
        ("🎉party.png", "🎉party.png"),
    ],
)
def test_download_names_are_sanitised(tmp_path: Path, name: str, expected: str) -> None:
    path = safe_download_path(tmp_path, name)
    assert path.name == expected
    assert path.parent == tmp_path.resolve()
    assert path.is_file() and path.stat().st_size == 0


def test_download_paths_are_unique_and_private(tmp_path: Path) -> None:
    names = [safe_download_path(tmp_path, "a.txt").name for _ in range(4)]
    assert names == ["a.txt", "a (1).txt", "a (2).txt", "a (3).txt"]
    assert stat.S_IMODE((tmp_path / "a (1).txt").stat().st_mode) == 0o600
    assert safe_download_path(tmp_path, "../a.txt").name == "a (4).txt"


def test_very_long_names_are_capped_keeping_the_extension(tmp_path: Path) -> None:
    for name in ("x" * 5000 + ".txt", "长" * 300 + ".doc", "y" * 400):
        first = safe_download_path(tmp_path, name)
        second = safe_download_path(tmp_path, name)
        for path in (first, second):
            assert len(path.name.encode("utf-8")) <= MAX_NAME_BYTES + len(" (1)")
            assert path.parent == tmp_path.resolve()
        assert first.suffix == Path(name).suffix
        assert second.name.endswith(f" (1){first.suffix}")
        first.name.encode("utf-8")  # cut on a character boundary, so it still encodes


def test_symlinks_in_dest_dir_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "x.txt").symlink_to(outside / "target.txt")  # dangling, pointing outside
    path = safe_download_path(dest, "x.txt")
    assert path == dest.resolve() / "x (1).txt"
    assert not (outside / "target.txt").exists()


def test_dest_dir_is_created_and_relative_paths_resolve_inside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = safe_download_path(Path("new/sub"), "../../../escape.txt")
    assert path == (tmp_path / "new" / "sub" / "escape.txt").resolve()
    assert os.path.commonpath([path, tmp_path.resolve()]) == str(tmp_path.resolve())


# ---------------------------------------------------------------- hostile load (issue 8)


def test_no_automatic_thumbnail_above_the_pixel_budget(tmp_path: Path) -> None:
    from client.core.media import AUTO_THUMBNAIL_PIXELS

    side = int((1.2 * AUTO_THUMBNAIL_PIXELS) ** 0.5)  # 24 MP: a real image may have it
    big = crafted_png(tmp_path / "big.png", side, side)
    assert detect_image(big) is not None  # still an image the user can open and save
    with pytest.raises(NotAnImageError):
        thumbnail(big, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_thumbnails_are_private(tmp_path: Path) -> None:
    source = make_image(tmp_path / "p.png", "PNG", (400, 300))
    cache = tmp_path / "data" / "thumbnails"
    made = thumbnail(source, cache)
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_a_new_download_folder_is_private_with_its_parents(tmp_path: Path) -> None:
    path = safe_download_path(tmp_path / "a" / "b", "x.txt")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
