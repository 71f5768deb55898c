"""BVH motion capture -> our skeleton: a strict parser, forward kinematics, retargeting, export.

Parsing is our own small strict reader rather than a PyPI one: we need bounded work on hostile
files (the frame count is checked before any motion data is read), one-line errors that say
where a file is wrong (truncated, wrong channel count on line N, NaN), and vectorised numpy
loading (a 30 s capture parses in milliseconds). The format is tiny (HIERARCHY + MOTION).

Retargeting follows Animated Drawings: the 3D bone directions are projected into a plane per
body group (trunk, arms, legs), chosen as
- frontal: the plane the performer faces (left-right and up), the picture of a character
  facing the camera;
- sagittal: the side plane (forward and up); an arm reaching forward points outwards on its
  own side of the picture;
- pca: the vertical plane through the horizontal direction the group's bones move along most
  (principal component of their horizontal bone vectors over the clip, centred per bone, the
  right side mirrored onto the left so both arms vote for one plane).
Each projected bone becomes an image-plane angle (liveavatar.types.BONES); for the limbs, the
part of a bone pointing out of the plane is turned to the limb's own side instead of being lost,
so limbs keep their elevation (see `retarget`). The performer's
facing is removed per frame (from the shoulders and hips), so a turning dancer stays frontal.
Root motion is kept: the hips' offset from the first frame in body heights, and moving towards
the camera as a scale (a pinhole camera ~4 body heights away).
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liveavatar.errors import UserError
from liveavatar.types import BONE_INDEX, BONES

from .retarget import TORSO_PER_HEIGHT, wrap_angle

MAX_BYTES = 64 << 20
MAX_FRAMES = 100_000          # ~55 min at 30 fps; an action is at most a minute of it
MAX_VALUES = 12_000_000       # frames x channels, bounds memory and parse time
MAX_JOINTS = 512
MAX_ABS_POSITION = 1e5        # in the file's units (cm, m or inches: all far below this)
MAX_ABS_ROTATION = 1e4        # degrees; unwrapped exports may exceed 360, never this
CAMERA_DISTANCE = 4.0         # body heights, for turning forward motion into scale
PLANES = ("frontal", "sagittal", "pca")
GROUPS = ("trunk", "arms", "legs")
DEFAULT_PROJECTION = {"trunk": "frontal", "arms": "pca", "legs": "pca"}
_POS = {"Xposition": 0, "Yposition": 1, "Zposition": 2}
_ROT = {"Xrotation": 0, "Yrotation": 1, "Zrotation": 2}
_NUM = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _clean(s: str, limit: int = 60) -> str:
    """A name from the file, safe to echo on one line."""
    s = re.sub(r"[\x00-\x1f\x7f]", "?", s)
    return s if len(s) <= limit else s[:limit] + "..."


@dataclass
class Bvh:
    names: list[str]
    parents: np.ndarray            # (J,) parent joint index, -1 for the root
    offsets: np.ndarray            # (J, 3) rest offset from the parent
    channels: list[tuple[str, ...]]
    channel_start: np.ndarray      # (J,) first column of each joint in `frames`
    frames: np.ndarray             # (N, C) float64
    frame_time: float
    end_sites: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    @property
    def duration_s(self) -> float:
        return len(self.frames) * self.frame_time


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

def read_bvh(path: str | Path) -> Bvh:
    p = Path(path)
    label = _clean(str(path), 120)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise UserError(f"{label}: {size >> 20} MiB is larger than the {MAX_BYTES >> 20} MiB a BVH file may be")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{label}: is a directory, expected a .bvh file") from None
    except OSError as e:
        raise UserError(f"{label}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")   # names only; numbers are ASCII either way
    return parse_bvh(text, label)


def _float(tok: str, label: str, what: str) -> float:
    if not _NUM.match(tok):
        raise UserError(f"{label}: {what}: expected a number, got {_clean(tok)!r}")
    v = float(tok)
    if abs(v) > MAX_ABS_POSITION:
        raise UserError(f"{label}: {what}: absurd value {v:g}")
    return v


def parse_bvh(text: str, label: str = "BVH") -> Bvh:
    """Parse BVH text strictly; any problem is a one-line UserError naming `label`."""
    head, sep, motion = text.partition("MOTION")
    if not sep:
        raise UserError(f"{label}: not a BVH file or truncated: no MOTION section")
    tok = head.split()
    if not tok or tok[0] != "HIERARCHY":
        raise UserError(f"{label}: not a BVH file: it must start with HIERARCHY")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[tuple[float, float, float]] = []
    channels: list[tuple[str, ...]] = []
    end_sites: dict[int, np.ndarray] = {}
    stack: list[int] = []          # open joints; -2 marks an End Site block
    i, n = 1, len(tok)

    def need(k: int) -> None:
        if i + k > n:
            raise UserError(f"{label}: truncated hierarchy (it ends inside "
                            f"{_clean(names[-1]) if names else 'the header'})")

    def offset(where: str) -> tuple[float, float, float]:
        nonlocal i
        need(4)
        if tok[i] != "OFFSET":
            raise UserError(f"{label}: {where}: expected OFFSET, got {_clean(tok[i])!r}")
        xyz = (_float(tok[i + 1], label, f"{where} OFFSET"), _float(tok[i + 2], label, f"{where} OFFSET"),
               _float(tok[i + 3], label, f"{where} OFFSET"))
        i += 4
        return xyz

    while i < n:
        t = tok[i]
        if t in ("ROOT", "JOINT"):
            if t == "ROOT" and names:
                raise UserError(f"{label}: more than one ROOT (one skeleton per file)")
            if t == "JOINT" and (not stack or stack[-1] == -2):
                raise UserError(f"{label}: JOINT outside a joint block")
            need(3)
            name = tok[i + 1]
            if tok[i + 2] != "{":
                raise UserError(f"{label}: joint {_clean(name)!r}: expected '{{', got {_clean(tok[i + 2])!r}")
            if len(names) >= MAX_JOINTS:
                raise UserError(f"{label}: more than {MAX_JOINTS} joints")
            i += 3
            where = f"joint {_clean(name)!r}"
            off = offset(where)
            need(2)
            if tok[i] != "CHANNELS":
                raise UserError(f"{label}: {where}: expected CHANNELS, got {_clean(tok[i])!r}")
            try:
                k = int(tok[i + 1])
            except ValueError:
                raise UserError(f"{label}: {where}: channel count {_clean(tok[i + 1])!r} is not a number") from None
            if not 0 <= k <= 6:
                raise UserError(f"{label}: {where}: {k} channels (a joint has 0 to 6)")
            i += 2
            need(k)
            ch = tuple(tok[i:i + k])
            bad = [c for c in ch if c not in _POS and c not in _ROT]
            if bad:
                raise UserError(f"{label}: {where}: unknown channel {_clean(bad[0])!r} (or the channel count "
                                f"{k} is wrong)")
            if len(set(ch)) != k:
                raise UserError(f"{label}: {where}: a channel is listed twice")
            i += k
            names.append(name)
            parents.append(stack[-1] if stack else -1)
            offsets.append(off)
            channels.append(ch)
            stack.append(len(names) - 1)
        elif t == "End":
            if not stack or stack[-1] == -2:
                raise UserError(f"{label}: End Site outside a joint")
            need(2)
            if tok[i + 1] != "Site" or tok[i + 2] != "{":
                raise UserError(f"{label}: expected 'End Site {{'")
            i += 3
            end_sites[stack[-1]] = np.array(offset(f"End Site of {_clean(names[stack[-1]])!r}"))
            stack.append(-2)
        elif t == "}":
            if not stack:
                raise UserError(f"{label}: unbalanced '}}' in the hierarchy")
            stack.pop()
            i += 1
        elif (t in _POS or t in _ROT) and names:
            raise UserError(f"{label}: joint {_clean(names[-1])!r}: more channel names than its CHANNELS count "
                            f"{len(channels[-1])}")
        else:
            raise UserError(f"{label}: unexpected {_clean(t)!r} in the hierarchy")
    if not names:
        raise UserError(f"{label}: no ROOT joint")
    if stack:
        raise UserError(f"{label}: truncated hierarchy: {len(stack)} block(s) not closed before MOTION")

    starts = np.cumsum([0] + [len(c) for c in channels])
    n_ch = int(starts[-1])
    frames, frame_time = _parse_motion(motion, n_ch, label)
    return Bvh(names, np.array(parents, np.intp), np.array(offsets, np.float64), channels,
               starts[:-1].astype(np.intp), frames, frame_time, end_sites)


def _parse_motion(motion: str, n_ch: int, label: str) -> tuple[np.ndarray, float]:
    lines = motion.split("\n", 3)
    if len(lines) < 3:
        raise UserError(f"{label}: truncated: the MOTION section has no 'Frames:' and 'Frame Time:' lines")
    m = re.match(r"^\s*Frames:\s*(\S+)\s*$", lines[1])
    if not m:
        raise UserError(f"{label}: expected 'Frames: N' after MOTION")
    try:
        n_frames = int(m.group(1))
    except ValueError:
        raise UserError(f"{label}: frame count {_clean(m.group(1))!r} is not a whole number") from None
    if n_frames < 2:
        raise UserError(f"{label}: {n_frames} frame(s); an action needs at least 2")
    if n_frames > MAX_FRAMES or n_frames * max(n_ch, 1) > MAX_VALUES:
        raise UserError(f"{label}: {n_frames} frames is more than the {MAX_FRAMES} (and {MAX_VALUES} values) a "
                        "file may have; cut the part you want first")
    m = re.match(r"^\s*Frame\s+Time:\s*(\S+)\s*$", lines[2])
    if not m or not _NUM.match(m.group(1)):
        raise UserError(f"{label}: expected 'Frame Time: seconds' after the frame count")
    frame_time = float(m.group(1))
    if not 1e-4 <= frame_time <= 1.0:
        raise UserError(f"{label}: frame time {frame_time:g} s is out of range (0.0001 to 1 s)")
    body = lines[3] if len(lines) > 3 else ""
    # Values per non-empty line, vectorised over the bytes (a 30 s capture is megabytes).
    raw = np.frombuffer(body.encode("latin-1", errors="replace"), np.uint8)
    is_tok = (raw != 32) & (raw != 9) & (raw != 10) & (raw != 13)
    starts = is_tok & ~np.concatenate([[False], is_tok[:-1]])
    line_of = np.cumsum(raw == 10)
    per_line = np.bincount(line_of[starts], minlength=int(line_of[-1]) + 1 if raw.size else 1)
    per_line = per_line[per_line > 0]
    if len(per_line) < n_frames:
        raise UserError(f"{label}: truncated: declares {n_frames} frames but has {len(per_line)}")
    if len(per_line) > n_frames:
        raise UserError(f"{label}: declares {n_frames} frames but has {len(per_line)} lines of motion data")
    wrong = np.nonzero(per_line != n_ch)[0]
    if wrong.size:
        k = int(wrong[0])
        raise UserError(f"{label}: frame {k + 1} has {per_line[k]} values; the hierarchy declares {n_ch} channels")
    try:
        values = np.loadtxt(io.StringIO(body), dtype=np.float64, comments=None, ndmin=2).ravel()
    except ValueError:
        values = np.zeros(0)
    if values.size != n_frames * n_ch:     # something is not a number: find it
        rows = [ln for ln in body.splitlines() if ln.strip()]
        for k, r in enumerate(rows):
            bad = next((v for v in r.split() if not _NUM.match(v)), None)
            if bad is not None:
                raise UserError(f"{label}: frame {k + 1}: {_clean(bad)!r} is not a number")
        raise UserError(f"{label}: motion data is not numeric")
    frames = values.reshape(n_frames, n_ch)
    finite = np.isfinite(frames)
    if not finite.all():
        k = int(np.argwhere(~finite)[0][0])
        raise UserError(f"{label}: frame {k + 1}: NaN or infinite value")
    big = np.abs(frames) > MAX_ABS_POSITION
    if big.any():
        k = int(np.argwhere(big)[0][0])
        raise UserError(f"{label}: frame {k + 1}: absurd value {frames[big][0]:g}")
    return frames, frame_time


# ---------------------------------------------------------------------------------------------
# Joint layouts
# ---------------------------------------------------------------------------------------------

# Our joints, each with the names (normalised: lower case, letters and digits only, side
# written as a "left"/"right" prefix) it has in the common layouts, most specific first:
# Mixamo and Animated Drawings (LeftArm, LeftForeArm, LeftHand, LeftUpLeg, LeftLeg, LeftFoot),
# CMU (LeftShoulder after LeftCollar, LeftElbow, LeftWrist, LeftHip, LeftKnee, LeftAnkle) and
# Blender/Rigify-style names (upper_arm.L, forearm.L, thigh.L, shin.L).
_SIDED = {
    "shoulder": ("arm", "upperarm", "uparm", "shoulder", "humerus"),
    "elbow": ("forearm", "elbow", "lowerarm", "loarm", "radius"),
    "wrist": ("hand", "wrist"),
    "hip": ("upleg", "upperleg", "thigh", "hip", "femur"),
    "knee": ("leg", "knee", "lowerleg", "loleg", "shin", "calf", "tibia"),
    "ankle": ("foot", "ankle"),
}
_CENTRE = {"hips": ("hips", "hip", "pelvis", "root"), "head": ("head",)}
TARGET_JOINTS = ("hips", "head") + tuple(f"{j}_{s}" for j in _SIDED for s in ("l", "r"))
_ALL_BASES = {b for names in _SIDED.values() for b in names}


def _normalise(name: str) -> str:
    """'mixamorig:LeftForeArm' -> 'leftforearm'; 'upper_arm.L' / 'L_UpperArm' -> 'leftupperarm'."""
    name = re.split(r"[:|]", name)[-1]
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name) if p]
    side = ""
    if len(parts) > 1 and parts[-1].lower() in ("l", "r"):
        side = "left" if parts.pop().lower() == "l" else "right"
    elif len(parts) > 1 and parts[0].lower() in ("l", "r"):
        side = "left" if parts.pop(0).lower() == "l" else "right"
    base = "".join(parts).lower()
    if not side and len(base) > 1 and base[0] in "lr" and base[1:] in _ALL_BASES:
        side, base = ("left" if base[0] == "l" else "right"), base[1:]   # CMU's lhand, rfemur
    return side + base


def map_joints(names: list[str]) -> tuple[dict[str, int], str]:
    """Our joints -> joint index in the file, and a name for the layout found.
    An unknown layout raises one line: the joints found and the ones missing."""
    norm: dict[str, int] = {}
    for i, n in enumerate(names):
        norm.setdefault(_normalise(n), i)
    found: dict[str, int] = {}
    missing: list[str] = []
    for j, options in _CENTRE.items():
        hit = next((norm[o] for o in options if o in norm), None)
        if hit is None:
            missing.append(f"{j} ({'/'.join(o.capitalize() for o in options[:2])})")
        else:
            found[j] = hit
    for j, options in _SIDED.items():
        for s, word in (("l", "left"), ("r", "right")):
            hit = next((norm[word + o] for o in options if word + o in norm), None)
            if hit is None:
                missing.append(f"{word} {j} ({'/'.join(word.capitalize() + o.capitalize() for o in options[:2])})")
            else:
                found[f"{j}_{s}"] = hit
    if missing:
        shown = ", ".join(_clean(n, 30) for n in names[:40])
        if len(names) > 40:
            shown += f", ... ({len(names)} in all)"
        raise UserError(f"unknown joint layout: found {shown}; missing {', '.join(missing)}")
    if "leftupleg" in norm and "leftforearm" in norm:
        layout = "mixamo/animated-drawings"
    elif "leftelbow" in norm or "lefthumerus" in norm:
        layout = "cmu"
    else:
        layout = "generic"
    # Two of our joints on one file joint would give zero-length bones.
    if len(set(found.values())) != len(found):
        raise UserError("unknown joint layout: two of our joints map to the same joint in the file")
    return found, layout


# ---------------------------------------------------------------------------------------------
# Forward kinematics
# ---------------------------------------------------------------------------------------------

def _axis_quaternions(axis: int, deg: np.ndarray) -> np.ndarray:
    half = np.radians(deg) * 0.5
    q = np.zeros((len(deg), 4))
    q[:, 0] = np.cos(half)
    q[:, 1 + axis] = np.sin(half)
    return q


def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (n, 4) quaternions (w, x, y, z): a then b in the local frame."""
    aw, ax, ay, az = a.T
    bw, bx, by, bz = b.T
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=1)


def _qrotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate (n, 3) vectors by unit quaternions (n, 4)."""
    u = q[:, 1:]
    t = 2.0 * np.cross(u, v)
    return v + q[:, :1] * t + np.cross(u, t)


def positions(bvh: Bvh, joints: list[int]) -> np.ndarray:
    """World positions (N, len(joints), 3) of the given joints in every frame. Quaternions, all
    frames at once (a 30 s capture at 120 fps is a few ms per joint)."""
    needed: set[int] = set()
    for j in joints:
        while j >= 0 and j not in needed:
            needed.add(j)
            j = int(bvh.parents[j])
    n = len(bvh.frames)
    rot: dict[int, np.ndarray] = {}
    pos: dict[int, np.ndarray] = {}
    identity = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    for j in sorted(needed):          # parents come before children in file order
        start = int(bvh.channel_start[j])
        local_q = identity
        local_t = np.broadcast_to(bvh.offsets[j], (n, 3)).copy()
        for k, ch in enumerate(bvh.channels[j]):
            col = bvh.frames[:, start + k]
            if ch in _POS:
                local_t[:, _POS[ch]] += col
            else:
                if np.abs(col).max() > MAX_ABS_ROTATION:
                    raise UserError(f"joint {_clean(bvh.names[j])!r}: absurd rotation {np.abs(col).max():g} degrees")
                local_q = _qmul(local_q, _axis_quaternions(_ROT[ch], col))   # intrinsic, listed order
        p = int(bvh.parents[j])
        if p < 0:
            rot[j], pos[j] = local_q, local_t
        else:
            pos[j] = pos[p] + _qrotate(rot[p], local_t)
            rot[j] = _qmul(rot[p], local_q)
    return np.stack([pos[j] for j in joints], axis=1)


# ---------------------------------------------------------------------------------------------
# Retargeting
# ---------------------------------------------------------------------------------------------

@dataclass
class Retargeted:
    bones: np.ndarray        # (N, len(BONES)) image-plane angles, radians
    root: np.ndarray         # (N, 3) hips x, y offset (body heights), scale
    fps: float
    layout: str
    planes: dict[str, float]  # group -> horizontal axis angle used (0 = frontal, 90 = sagittal), degrees


_BONE_JOINTS = {"spine": ("hips", "shoulders"), "neck": ("shoulders", "head"),
                "upper_arm_l": ("shoulder_l", "elbow_l"), "lower_arm_l": ("elbow_l", "wrist_l"),
                "upper_arm_r": ("shoulder_r", "elbow_r"), "lower_arm_r": ("elbow_r", "wrist_r"),
                "upper_leg_l": ("hip_l", "knee_l"), "lower_leg_l": ("knee_l", "ankle_l"),
                "upper_leg_r": ("hip_r", "knee_r"), "lower_leg_r": ("knee_r", "ankle_r")}
_GROUP_BONES = {"trunk": ("spine", "neck"),
                "arms": ("upper_arm_l", "lower_arm_l", "upper_arm_r", "lower_arm_r"),
                "legs": ("upper_leg_l", "lower_leg_l", "upper_leg_r", "lower_leg_r")}


def parse_projection(spec: str | None) -> dict[str, str]:
    """'pca' (every group) or 'arms=sagittal,legs=pca' (others keep the default)."""
    out = dict(DEFAULT_PROJECTION)
    if not spec:
        return out
    for item in spec.split(","):
        item = item.strip()
        group, eq, plane = item.partition("=")
        if not eq:
            group, plane = "", group
        if plane not in PLANES or (group and group not in GROUPS):
            raise UserError(f"projection {_clean(item)!r}: use frontal, sagittal or pca, optionally per group "
                            f"({', '.join(GROUPS)}), e.g. arms=sagittal,legs=pca")
        for g in ([group] if group else GROUPS):
            out[g] = plane
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def retarget(bvh: Bvh, projection: dict[str, str] | None = None) -> Retargeted:
    proj = projection or DEFAULT_PROJECTION
    found, layout = map_joints(bvh.names)
    order = list(found)
    P = positions(bvh, [found[j] for j in order])
    at = {j: P[:, k] for k, j in enumerate(order)}
    at["shoulders"] = 0.5 * (at["shoulder_l"] + at["shoulder_r"])

    # Up: the world axis nearest the mean hips -> head direction.
    mean_up = (at["head"] - at["hips"]).mean(0)
    if not np.isfinite(mean_up).all() or np.linalg.norm(mean_up) < 1e-9:
        raise UserError("the skeleton has no height (head and hips coincide)")
    axis = int(np.argmax(np.abs(mean_up)))
    up = np.zeros(3)
    up[axis] = np.sign(mean_up[axis])
    # The performer's left, per frame, from shoulders and hips (horizontal), and forward.
    lat = (at["shoulder_l"] - at["shoulder_r"]) + (at["hip_l"] - at["hip_r"])
    lat -= np.outer(lat @ up, up)
    norm = np.linalg.norm(lat, axis=1)
    good = norm > 1e-6 * max(float(norm.max()), 1e-12)
    if not good.any():
        raise UserError("the skeleton has no width (left and right joints coincide)")
    idx = np.where(good, np.arange(len(norm)), 0)
    idx = np.maximum.accumulate(idx)            # a degenerate frame keeps the previous facing
    first = int(np.argmax(good))
    idx[:first] = first
    lat = _unit(lat[idx])
    fwd = np.cross(lat, up)

    vec = np.stack([at[b] - at[a] for a, b in (_BONE_JOINTS[n] for n in BONES)], axis=1)   # (N, 10, 3)
    a = np.einsum("nbk,nk->nb", vec, lat)
    f = np.einsum("nbk,nk->nb", vec, fwd)
    u = vec @ up
    right = np.array([n.endswith("_r") for n in BONES])
    a_mirrored = np.where(right, -a, a)         # right side reflected onto the left
    x = np.empty_like(a)
    planes: dict[str, float] = {}
    for group, names in _GROUP_BONES.items():
        cols = [BONE_INDEX[n] for n in names]
        method = proj.get(group, DEFAULT_PROJECTION[group])
        if method == "frontal":
            beta = 0.0
        elif method == "sagittal":
            beta = np.pi / 2
        else:
            # Centred per bone: the plane of the motion, not of a bone's constant lean.
            ga = (a_mirrored[:, cols] - a_mirrored[:, cols].mean(0)).ravel()
            gf = (f[:, cols] - f[:, cols].mean(0)).ravel()
            cov = np.array([[ga @ ga, ga @ gf], [ga @ gf, gf @ gf]])
            w, v = np.linalg.eigh(cov)
            c, s = v[:, int(np.argmax(w))]
            if c < 0 or (abs(c) < 1e-9 and s < 0):
                c, s = -c, -s
            beta = float(np.arctan2(s, c))
        planes[group] = round(float(np.degrees(beta)), 1)
        cb, sb = np.cos(beta), np.sin(beta)
        for col in cols:
            side = -1.0 if right[col] else 1.0
            # Left side: a cos + f sin; the right side is its mirror image.
            x[:, col] = a[:, col] * cb + side * f[:, col] * sb
            if group != "trunk":
                # What points out of the plane (towards or away from the camera) is turned to the
                # limb's own side rather than dropped, so a limb keeps its elevation: an arm held
                # forward at shoulder height stays level instead of folding down. Exact for limbs
                # on their own side, continuous where one crosses the body; in-plane motion is
                # unchanged.
                horizontal = np.hypot(a[:, col], f[:, col])
                x[:, col] += side * (horizontal - np.abs(x[:, col]))
    bones = np.arctan2(x, -u)

    body_h = float(np.linalg.norm(at["shoulders"] - at["hips"], axis=1).mean()) / TORSO_PER_HEIGHT
    if body_h <= 1e-9:
        raise UserError("the skeleton has no torso (hips and shoulders coincide)")
    d = at["hips"] - at["hips"][0]
    rx = d @ lat[0] / body_h
    ry = -(d @ up) / body_h
    toward = d @ fwd[0] / body_h
    scale = CAMERA_DISTANCE / np.maximum(CAMERA_DISTANCE - toward, 1e-3)
    root = np.stack([np.clip(rx, -1, 1), np.clip(ry, -1, 1), np.clip(scale, 0.5, 2.0)], axis=1)
    return Retargeted(wrap_angle(bones).astype(np.float32), root.astype(np.float32), bvh.fps, layout, planes)


def resample(values: np.ndarray, times: np.ndarray, fps: float, angle_cols: int) -> np.ndarray:
    """Values (N, K) at `times` -> evenly spaced at `fps` from times[0]; the first `angle_cols`
    columns are angles (interpolated the short way round)."""
    v = values.astype(np.float64)
    v[:, :angle_cols] = np.unwrap(v[:, :angle_cols], axis=0)
    t_new = times[0] + np.arange(int(np.floor((times[-1] - times[0]) * fps + 1e-3)) + 1) / fps
    out = np.stack([np.interp(t_new, times, v[:, k]) for k in range(v.shape[1])], axis=1)
    out[:, :angle_cols] = wrap_angle(out[:, :angle_cols])
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Export (our skeleton, frontal plane, Mixamo joint names so any tool and our importer read it)
# ---------------------------------------------------------------------------------------------

_H = 170.0                                     # body height in the file, cm
_LEN = {"spine": TORSO_PER_HEIGHT * _H, "neck": 0.10 * _H, "head": 0.12 * _H, "upper_arm": 0.17 * _H,
        "lower_arm": 0.15 * _H, "hand": 0.05 * _H, "upper_leg": 0.24 * _H, "lower_leg": 0.24 * _H,
        "foot": 0.06 * _H, "shoulder_half": 0.11 * _H, "hip_half": 0.06 * _H}


def export_bvh(bones: np.ndarray, root: np.ndarray, fps: float) -> str:
    """Bone angles (N, 10) and root (N, 3) -> BVH text. The character faces +Z, Y is up, its
    left is +X; every joint turns about Z, so the motion stays in the picture plane."""
    B = BONE_INDEX
    L = _LEN
    lines = ["HIERARCHY", "ROOT Hips", "{", "\tOFFSET 0.0 0.0 0.0",
             "\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation"]
    rot3 = "CHANNELS 3 Zrotation Xrotation Yrotation"

    def joint(depth: int, name: str, off: tuple[float, float, float], body: list[str]) -> list[str]:
        t = "\t" * depth
        return [f"{t}JOINT {name}", f"{t}{{", f"{t}\tOFFSET {off[0]:.4f} {off[1]:.4f} {off[2]:.4f}",
                f"{t}\t{rot3}", *body, f"{t}}}"]

    def end(depth: int, off: tuple[float, float, float]) -> list[str]:
        t = "\t" * depth
        return [f"{t}End Site", f"{t}{{", f"{t}\tOFFSET {off[0]:.4f} {off[1]:.4f} {off[2]:.4f}", f"{t}}}"]

    def arm(side: str, sgn: float) -> list[str]:
        s = "Left" if sgn > 0 else "Right"
        return joint(2, f"{s}Arm", (sgn * L["shoulder_half"], L["spine"], 0.0),
                     joint(3, f"{s}ForeArm", (0.0, -L["upper_arm"], 0.0),
                           joint(4, f"{s}Hand", (0.0, -L["lower_arm"], 0.0), end(5, (0.0, -L["hand"], 0.0)))))

    def leg(sgn: float) -> list[str]:
        s = "Left" if sgn > 0 else "Right"
        return joint(1, f"{s}UpLeg", (sgn * L["hip_half"], 0.0, 0.0),
                     joint(2, f"{s}Leg", (0.0, -L["upper_leg"], 0.0),
                           joint(3, f"{s}Foot", (0.0, -L["lower_leg"], 0.0), end(4, (0.0, 0.0, L["foot"])))))

    spine = joint(1, "Spine", (0.0, 0.0, 0.0),
                  joint(2, "Neck", (0.0, L["spine"], 0.0),
                        joint(3, "Head", (0.0, L["neck"], 0.0), end(4, (0.0, L["head"], 0.0))))
                  + arm("l", 1.0) + arm("r", -1.0))
    lines += spine + leg(1.0) + leg(-1.0) + ["}"]

    th = bones.astype(np.float64)
    spine_rot = th[:, B["spine"]] - np.pi
    # Column order follows the hierarchy above (Hips, Spine, Neck, Head, LeftArm, LeftForeArm,
    # LeftHand, RightArm, RightForeArm, RightHand, LeftUpLeg, LeftLeg, LeftFoot, RightUpLeg, ...).
    z = np.zeros(len(th))
    rel = [spine_rot, th[:, B["neck"]] - th[:, B["spine"]], z]
    for side in ("l", "r"):
        upper, lower = th[:, B[f"upper_arm_{side}"]], th[:, B[f"lower_arm_{side}"]]
        rel += [upper - spine_rot, lower - upper, z]
    for side in ("l", "r"):
        upper, lower = th[:, B[f"upper_leg_{side}"]], th[:, B[f"lower_leg_{side}"]]
        rel += [upper, lower - upper, z]
    deg = np.degrees(wrap_angle(np.stack(rel, axis=1)))
    r = root.astype(np.float64)
    scale = np.clip(r[:, 2], 0.5, 2.0)
    hips = np.stack([r[:, 0] * _H, -r[:, 1] * _H, _H * CAMERA_DISTANCE * (1.0 - 1.0 / scale)], axis=1)
    cols = [hips, np.zeros((len(th), 3))]
    for k in range(deg.shape[1]):
        cols.append(np.stack([deg[:, k], z, z], axis=1))
    data = np.concatenate(cols, axis=1)
    lines += ["MOTION", f"Frames: {len(th)}", f"Frame Time: {1.0 / fps:.9f}"]
    lines += [" ".join(f"{v:.4f}" for v in row) for row in data]
    return "\n".join(lines) + "\n"
