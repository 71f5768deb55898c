"""One picture (or a layered PSD) in, a mesh character pack out, in one step.

`import_character(src, name)` reads the picture (size-checked before decoding), cuts the figure
out, rigs it, crops the canvas to the figure and writes `<root>/<name>/` (art PNGs +
character.json, liveavatar.generation.mesh.pack format "mesh/1"). The pack is built in a
"."-prefixed temporary folder beside its final place and renamed into place only when complete,
so a failure leaves nothing half-written (the character catalogue skips "." folders).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liveavatar.authoring.cutout import Cutout, NoFigureError, cut_out, largest_shape, whole_picture
from liveavatar.authoring.reading import Layer, Picture, one_line, read_picture
from liveavatar.authoring.rig import Rig, auto_rig, default_rig
from liveavatar.errors import UserError
from liveavatar.generation.mesh import pack

#: Art is scaled down to this longest side: the live output is 256-512 px, and the pack stays small.
ART_MAX_SIDE = 1024
DEFAULT_LICENCE = "unspecified: the user's own art, imported for their own use"
_MARGIN = 0.03


@dataclass
class ImportResult:
    folder: Path
    manifest: pack.MeshManifest
    method: str          # cut-out: alpha | paper | photo | psd | manual (no figure found: the whole picture)
    joints_by: str       # pose | silhouette | manual (a standing figure's rig, to be placed by hand)
    seconds: float


def _resize(rgba: np.ndarray, scale: float) -> np.ndarray:
    """Scale straight-alpha RGBA through premultiplied colour (no dark fringes)."""
    import cv2
    h, w = rgba.shape[:2]
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    pre = rgba.astype(np.float32)
    pre[..., :3] *= pre[..., 3:4] / 255.0
    small = np.asarray(cv2.resize(pre, size, interpolation=cv2.INTER_AREA), np.float32)
    a = np.maximum(small[..., 3:4], 1e-3)
    small[..., :3] = np.where(small[..., 3:4] > 0.5, small[..., :3] * 255.0 / a, 0)
    return np.clip(small + 0.5, 0, 255).astype(np.uint8)


def _downscale(pic: Picture) -> Picture:
    w, h = pic.size
    scale = ART_MAX_SIDE / max(w, h)
    if scale >= 1:
        return pic
    layers = [Layer(la.name, la.part, _resize(la.rgba, scale), la.z) for la in pic.layers]
    rgba = _resize(pic.rgba, scale) if pic.has_alpha else _opaque_resize(pic.rgba, scale)
    return Picture(path=pic.path, format=pic.format, rgba=rgba, has_alpha=pic.has_alpha, layers=layers)


def _opaque_resize(rgba: np.ndarray, scale: float) -> np.ndarray:
    import cv2
    h, w = rgba.shape[:2]
    return cv2.resize(rgba, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)


def _crop_box(alpha: np.ndarray, joints: dict[str, tuple[float, float, bool]]) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the figure plus a margin, inside the picture."""
    h, w = alpha.shape
    ys, xs = np.nonzero(alpha > 0.02)
    m = int(round(_MARGIN * max(h, w)))
    x0, x1 = max(0, xs.min() - m), min(w, xs.max() + 1 + m)
    y0, y1 = max(0, ys.min() - m), min(h, ys.max() + 1 + m)
    if x1 - x0 < 8:
        x0, x1 = max(0, min(x0, w - 8)), max(8, x1) if w >= 8 else w
    if y1 - y0 < 8:
        y0, y1 = max(0, min(y0, h - 8)), max(8, y1) if h >= 8 else h
    return int(x0), int(y0), int(x1), int(y1)


def _png(rgba: np.ndarray, path: Path) -> None:
    from PIL import Image
    Image.fromarray(rgba, "RGBA").save(path)


def build_manifest(name: str, canvas: tuple[int, int], rig: Rig, layers: list[dict[str, Any]],
                   offset: tuple[int, int] = (0, 0), *, display_name: str = "", licence: str = DEFAULT_LICENCE,
                   author: str = "", source: str = "") -> pack.MeshManifest:
    """The validated manifest of a rig whose picture coordinates are shifted by -offset."""
    ox, oy = offset
    joints = {j: {"x": round(x - ox, 2), "y": round(y - oy, 2), "present": bool(p)}
              for j, (x, y, p) in rig.joints.items()
              if rig.framing == "full" or j not in pack.LEG_JOINTS}
    f = rig.face
    face: dict[str, Any] = {"present": f.present, "skin_rgb": list(f.skin_rgb), "detected_by": f.detected_by}
    if f.head_center is not None:
        face["head_center"] = [round(f.head_center[0] - ox, 2), round(f.head_center[1] - oy, 2)]
    if f.head_radius:
        face["head_radius"] = round(float(f.head_radius), 2)
    for key in ("eye_l", "eye_r", "brow_l", "brow_r", "mouth"):
        b = f.boxes.get(key)
        face[key] = None if b is None else [round(b[0] - ox, 2), round(b[1] - oy, 2), round(b[2], 2), round(b[3], 2)]
    raw = {"format": pack.FORMAT, "kind": "mesh", "name": name, "display_name": display_name or name,
           "licence": licence, "author": author, "source": source, "canvas": list(canvas),
           "framing": rig.framing, "layers": layers, "joints": joints, "face": face}
    try:
        return pack.MeshManifest.model_validate(raw)
    except Exception as e:
        raise UserError(f"the automatic rig of {name!r} is not valid ({one_line(e, 160)}); "
                        "open it in the studio's rig editor and place the rig by hand") from None


def check_new_name(name: str, root: Path, replace: bool = False) -> None:
    from liveavatar.generation.characters import catalog
    pack.check_name(name)
    entry = catalog().get(name)
    if entry is not None and entry.shipped:
        raise UserError(f"character name {name!r} is taken by a shipped character; choose another")
    target = root / name
    if (entry is not None or target.exists()) and not replace:
        raise UserError(f"character {name!r} already exists in {root}; use --replace to overwrite it "
                        "or `liveavatar character remove` first")


def import_character(src: Path | str, name: str, dest_root: Path | None = None, *, display_name: str = "",
                     licence: str = DEFAULT_LICENCE, author: str = "", method: str = "auto",
                     replace: bool = False, use_pose: bool = True, manual: bool = False) -> ImportResult:
    """Import picture `src` as character `name` into `dest_root` (default:
    paths.user_characters_dir()). UserError (one line) on any bad input; nothing is left behind.
    `manual`: where no figure is found, keep the whole picture (its alpha) and start from a standing
    figure's rig for the user to place in the rig editor."""
    from liveavatar.paths import user_characters_dir
    t0 = time.perf_counter()
    root = Path(dest_root) if dest_root is not None else user_characters_dir()
    check_new_name(name, root, replace)
    src = Path(src)
    pic = _downscale(read_picture(src))
    where = one_line(src)
    rgb = np.ascontiguousarray(pic.rgba[..., :3])
    try:
        if pic.layers:
            alpha = pic.rgba[..., 3].astype(np.float32) / 255.0
            cut = Cutout(method="psd", alpha=alpha, mask=largest_shape(pic.rgba[..., 3] >= 128))
            if cut.mask.sum() < 64:
                raise NoFigureError(f"{where}: no figure found in the PSD's layers; open it in the studio's "
                                    "rig editor (New character) and place the rig by hand")
        else:
            cut = cut_out(pic.rgba, pic.has_alpha, method, where=where)
        rig = auto_rig(rgb, cut.mask, use_pose=use_pose, photo=cut.method == "photo")
    except NoFigureError:
        if not manual:
            raise
        cut = whole_picture(pic.rgba, pic.has_alpha or bool(pic.layers))
        if int(cut.mask.sum()) < 64:
            raise UserError(f"{where}: nothing visible to import") from None
        rig = default_rig(rgb, cut.mask)
    x0, y0, x1, y1 = _crop_box(cut.alpha, rig.joints)
    canvas = (x1 - x0, y1 - y0)
    art: list[tuple[str, np.ndarray, dict[str, Any]]] = []
    if pic.layers:
        for i, la in enumerate(pic.layers):
            crop = np.ascontiguousarray(la.rgba[y0:y1, x0:x1])
            if int(crop[..., 3].max()) < 128:
                continue
            file = f"layers/{i:02d}_{la.part}.png"
            art.append((file, crop, {"name": _layer_name(la.name, i), "file": file, "part": la.part,
                                     "z": la.z}))
    else:
        body = pic.rgba.copy()
        body[..., 3] = np.clip(cut.alpha * 255 + 0.5, 0, 255).astype(np.uint8)
        body[body[..., 3] == 0, :3] = 0
        art.append(("art.png", np.ascontiguousarray(body[y0:y1, x0:x1]),
                    {"name": "body", "file": "art.png", "part": "body", "z": 0}))
    manifest = build_manifest(name, canvas, rig, [spec for _, _, spec in art], (x0, y0),
                              display_name=display_name, licence=licence, author=author,
                              source=f"{one_line(src.name, 80)} ({cut.method} cut-out, joints by "
                                     f"{rig.joints_by}, face by {rig.face.detected_by})")
    folder = write_pack(root, name, manifest, [(f, a) for f, a, _ in art], replace=replace)
    return ImportResult(folder=folder, manifest=manifest, method=cut.method, joints_by=rig.joints_by,
                        seconds=time.perf_counter() - t0)


def _layer_name(name: str, i: int) -> str:
    clean = " ".join(one_line(name, 60).split()) or f"layer {i}"
    return f"{clean[:56]} #{i}"


def _manifest_json(manifest: pack.MeshManifest) -> str:
    return json.dumps(manifest.model_dump(mode="json"), indent=1) + "\n"


def write_pack(root: Path, name: str, manifest: pack.MeshManifest, files: list[tuple[str, np.ndarray]],
               replace: bool = False) -> Path:
    """Write the pack under a temporary "." folder in `root`, then rename it into place."""
    pack.check_name(name)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        tmp.chmod(0o755)   # mkdtemp makes it private; a pack is ordinary user data
        for rel, rgba in files:
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            _png(rgba, p)
        (tmp / pack.MANIFEST).write_text(_manifest_json(manifest), encoding="utf-8")
        _swap_into_place(tmp, target, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap_into_place(tmp: Path, target: Path, replace: bool) -> None:
    if target.exists():
        if not replace:
            raise UserError(f"character {target.name!r} already exists in {target.parent}")
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)


def save_manifest(folder: Path, manifest: pack.MeshManifest) -> None:
    """Replace character.json atomically (a temp file in the folder, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=".character.", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_manifest_json(manifest))
        os.replace(tmp, folder / pack.MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_character(name: str, root: Path | None = None) -> Path:
    """Delete an imported character (never a shipped one)."""
    from liveavatar.generation.characters import find
    from liveavatar.paths import user_characters_dir
    pack.check_name(name)
    root = root or user_characters_dir()
    entry = find(name)
    if entry.shipped:
        raise UserError(f"{name!r} is a shipped character and cannot be removed")
    folder = root / name
    if not folder.is_dir():
        raise UserError(f"{name!r} is not in {root}")
    trash = root / f".{name}.removed-{uuid.uuid4().hex[:8]}"
    os.rename(folder, trash)      # gone from the catalogue at once, even if deleting takes a while
    shutil.rmtree(trash, ignore_errors=True)
    return folder
