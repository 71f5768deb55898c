"""Every bad input of issue 13: one line, a UserError (exit code 2 / 4xx), nothing half-written."""
from __future__ import annotations

import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from liveavatar.authoring import importer
from liveavatar.authoring.cutout import NoFigureError
from liveavatar.authoring.importer import import_character
from liveavatar.authoring.reading import read_picture
from liveavatar.errors import UserError
from tests.authoring.conftest import DRAWINGS, write_png


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit grey PNG of width x height: a few hundred KB that decode to width*height px."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts))
                     + _chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def giant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return huge_png(tmp_path_factory.mktemp("giant") / "giant.png", 30000, 30000)


def _one_line_error(excinfo: pytest.ExceptionInfo[UserError]) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def _nothing_written(root: Path) -> None:
    assert not root.exists() or list(root.iterdir()) == []


def test_not_an_image(tmp_path: Path, data_dir: Path) -> None:
    p = tmp_path / "notes.png"
    p.write_text("this is a shopping list, not a picture\n")
    with pytest.raises(UserError) as e:
        import_character(p, "mia")
    assert "not a picture" in _one_line_error(e)
    _nothing_written(data_dir)


def test_empty_file(tmp_path: Path, data_dir: Path) -> None:
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(UserError) as e:
        import_character(p, "mia")
    assert "empty" in _one_line_error(e)
    _nothing_written(data_dir)


def test_missing_file(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(UserError) as e:
        import_character(tmp_path / "nope.png", "mia")
    _one_line_error(e)


def test_truncated_picture(tmp_path: Path, data_dir: Path) -> None:
    src = (DRAWINGS / "char1_texture.png").read_bytes()
    p = tmp_path / "cut.png"
    p.write_bytes(src[: len(src) // 3])
    with pytest.raises(UserError) as e:
        import_character(p, "mia")
    assert "damaged or truncated" in _one_line_error(e)
    _nothing_written(data_dir)


def test_fully_transparent(tmp_path: Path, data_dir: Path) -> None:
    p = write_png(tmp_path / "clear.png", np.zeros((200, 200, 4), np.uint8))
    with pytest.raises(UserError) as e:
        import_character(p, "mia")
    assert "fully transparent" in _one_line_error(e)
    _nothing_written(data_dir)


def test_one_flat_colour_is_empty(tmp_path: Path, data_dir: Path) -> None:
    p = write_png(tmp_path / "white.png", np.full((200, 300, 3), 255, np.uint8))
    with pytest.raises(UserError) as e:
        import_character(p, "mia")
    assert "empty" in _one_line_error(e)
    _nothing_written(data_dir)


def blank_paper(path: Path) -> Path:
    """Blank paper with its grain (the paper of a real drawing, the figure painted over)."""
    from tests.authoring.conftest import drawing_mask, drawing_rgba
    rgba = drawing_rgba("char2").copy()
    paper = ~drawing_mask("char2")
    fill = np.median(rgba[paper][:, :3], axis=0).astype(np.uint8)
    rng = np.random.default_rng(0)
    noise = rng.integers(-3, 4, size=rgba.shape[:2] + (3,))
    rgba[..., :3] = np.where(paper[..., None], rgba[..., :3], np.clip(fill.astype(int) + noise, 0, 255))
    return write_png(path, rgba)


def test_no_figure_says_to_open_the_rig_editor(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(NoFigureError) as e:
        import_character(blank_paper(tmp_path / "blank.png"), "mia")
    assert "rig editor" in _one_line_error(e)
    assert e.value.http_status == 422
    _nothing_written(data_dir)


def test_no_figure_placed_by_hand_gets_a_standing_rig(tmp_path: Path, data_dir: Path) -> None:
    """What the rig editor's "Place the rig by hand" asks for: the whole picture, a default rig."""
    from liveavatar.generation.mesh import pack
    res = import_character(blank_paper(tmp_path / "blank.png"), "mia", manual=True)
    assert res.method == "manual" and res.joints_by == "manual"
    m = pack.load(res.folder).manifest
    assert m.framing == "full" and m.face.detected_by == "user"
    w, h = m.canvas
    assert all(0 <= j.x <= w and 0 <= j.y <= h for j in m.joints.values())


def test_30000_square_refused_before_decoding(giant: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageFile

    def no_decoding(self: object) -> None:
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as e:
            import_character(giant, "mia")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "too large" in _one_line_error(e)
    assert peak < 20 * 1024 * 1024     # 900 MP would need 0.9-3.6 GB
    _nothing_written(data_dir)


def test_decompression_bomb_within_the_side_limit_refused(tmp_path: Path, data_dir: Path) -> None:
    bomb = huge_png(tmp_path / "bomb.png", 8000, 6000)     # 48 MP from ~6 KB
    assert bomb.stat().st_size < 100_000
    with pytest.raises(UserError) as e:
        read_picture(bomb)
    assert "too large" in _one_line_error(e)


def test_huge_psd_refused_from_its_header(tmp_path: Path, data_dir: Path) -> None:
    p = tmp_path / "huge.psd"
    p.write_bytes(b"8BPS" + struct.pack(">H6sHIIHH", 1, b"\0" * 6, 4, 30000, 30000, 8, 3) + b"\0" * 64)
    with pytest.raises(UserError) as e:
        import_character(p, "mia")
    assert "too large" in _one_line_error(e)


@pytest.mark.parametrize("name", ["../evil", "a/b", "/etc/x", ".hidden", "", "x\ny", "Mia", "..", "a" * 65,
                                  "con:x", "name with space", "émile"])
def test_names_with_path_tricks_refused(name: str, data_dir: Path) -> None:
    with pytest.raises(UserError) as e:
        import_character(DRAWINGS / "char2_texture.png", name)
    assert "not allowed" in _one_line_error(e)
    _nothing_written(data_dir)
    assert not (data_dir.parent / "evil").exists()


def test_shipped_name_refused(data_dir: Path) -> None:
    with pytest.raises(UserError) as e:
        import_character(DRAWINGS / "char2_texture.png", "nova")
    assert "shipped" in _one_line_error(e)


@pytest.mark.slow
def test_failure_while_writing_leaves_nothing(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importer._png
    calls = []

    def failing(rgba: np.ndarray, path: Path) -> None:
        calls.append(path)
        real(rgba, path)
        raise OSError("disk full")
    monkeypatch.setattr(importer, "_png", failing)
    with pytest.raises(OSError):
        import_character(DRAWINGS / "char2_texture.png", "mia")
    assert calls and not calls[0].exists()
    _nothing_written(data_dir)


@pytest.mark.slow
def test_replace_keeps_the_old_pack_until_the_new_one_is_complete(data_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    first = import_character(DRAWINGS / "char2_texture.png", "mia")
    before = (first.folder / "character.json").read_text()
    with pytest.raises(UserError):
        import_character(DRAWINGS / "char2_texture.png", "mia")            # exists, no replace
    monkeypatch.setattr(importer, "_png", lambda rgba, path: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        import_character(DRAWINGS / "char3_texture.png", "mia", replace=True)
    assert (first.folder / "character.json").read_text() == before
    assert sorted(p.name for p in data_dir.iterdir()) == ["mia"]
