"""`liveavatar bench fidelity`: does the avatar follow a real person?

Each real clip in `<repo>/../shared/media` (faces: people making expressions; bodies: people
moving, several in view) is rendered through `liveavatar render`'s own code path
(`liveavatar.offline.render.render_file`). MediaPipe then reads the person (the input frames) and
the avatar (the rendered frames over grey) with the same measures, so the figures mean the same
for every generator (rig2d, neural, imported characters):

- face: mouth opening (inner-lip gap / face height), eye opening (lid gap / eye width), brow
  raise (brow above the upper lid / face height), head yaw / pitch / roll (from the nose against
  the cheeks and the eye line); Pearson correlation of person vs avatar over the frames where
  both faces were found; blinks (dips of the person's eye opening) matched to the avatar's
  within 2 frames;
- body: the avatar found by MediaPipe Pose in the frames where the person is, the mean limb-angle
  error over limbs the person shows clearly, and the avatar's silhouette inside the canvas;
- false triggers: gestures recognised and actions started on the face clips (nobody gestures in
  them), per minute;
- emotion: the dominant emotion shown per one-second segment, beside the person's measures.

The default mapping mirrors the avatar (a selfie view), so the person is measured on the
horizontally flipped frame and their limbs are compared with the avatar's opposite side.
The conditioning is logged too ("chain" rows): the person's measure against the value the
conditioner asked for tells whether a loss is in perception/conditioning or in the drawing.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liveavatar.bench import report
from liveavatar.errors import UserError
from liveavatar.types import FP, CapturedFrame, Conditioning, Cues

FACE_CLIPS = ("d0", "d3", "d9")
BODY_CLIPS = ("two_people_room", "basketball")
CLIP_FILES = {"d0": "faces/d0.mp4", "d3": "faces/d3.mp4", "d9": "faces/d9.mp4",
              "two_people_room": "bodies/two_people_room.mp4", "basketball": "bodies/basketball.mp4"}
FACE_MEASURES = ("mouth_open", "eye_open", "brow_raise", "head_yaw", "head_pitch", "head_roll")
# Limb -> MediaPipe Pose landmark pair (start, end); the avatar's side as MediaPipe labels it.
LIMBS = {"upper_arm_l": (11, 13), "lower_arm_l": (13, 15), "upper_arm_r": (12, 14),
         "lower_arm_r": (14, 16), "upper_leg_l": (23, 25), "lower_leg_l": (25, 27),
         "upper_leg_r": (24, 26), "lower_leg_r": (26, 28)}
# Pose landmark index -> its mirror partner (left <-> right), for the flipped person.
_POSE_MIRROR = np.arange(33)
for _a, _b in ((1, 4), (2, 5), (3, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 18), (19, 20),
               (21, 22), (23, 24), (25, 26), (27, 28), (29, 30), (31, 32)):
    _POSE_MIRROR[_a], _POSE_MIRROR[_b] = _b, _a
BLINK_TOLERANCE = 2          # frames
VISIBLE = 0.5
GREY = 128


def media_root() -> Path:
    """The shared real media: `<repository root>/../shared/media`."""
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "media"


def clip_path(name: str) -> Path:
    if name not in CLIP_FILES:
        raise UserError(f"unknown clip {name!r}; known: {', '.join(CLIP_FILES)}")
    p = media_root() / CLIP_FILES[name]
    if not p.is_file():
        raise UserError(f"{p}: the shared real media is missing (see the README's Media section)")
    return p


# ------------------------------------------------------------------------------------------------
# Measures (the same for the person and the avatar)
# ------------------------------------------------------------------------------------------------

def face_measures(lm: np.ndarray, width: int, height: int) -> np.ndarray:
    """FACE_MEASURES from 468/478 FaceMesh landmarks (normalised), in pixels of their image.
    Eye opening is per eye (left, right in the image) followed by the mean in slot 1."""
    p = lm[:, :2] * (width, height)

    def d(a: int, b: int) -> float:
        return float(np.hypot(*(p[a] - p[b])))

    face_h = d(10, 152) + 1e-6
    mouth = d(13, 14) / face_h
    eye_a = (d(159, 145) + d(158, 153)) / 2 / (d(33, 133) + 1e-6)
    eye_b = (d(386, 374) + d(385, 380)) / 2 / (d(263, 362) + 1e-6)
    # Brows and pitch in the head's own frame (Face Mesh's x, y, z; axes from the eye corners and
    # the forehead's midline, which the jaw does not move): in the picture a brow-to-eye distance
    # also changes when the head nods (d3: r = -0.81 against the head's pitch).
    q, rot = _head_frame(lm, width, height)
    # Brows above the eye corners (a squint moves the lid, not the corners), in eye spans.
    brow = (((q[33, 1] + q[133, 1]) / 2 - (q[105, 1] + q[66, 1]) / 2)
            + ((q[263, 1] + q[362, 1]) / 2 - (q[334, 1] + q[296, 1]) / 2)) / 2
    # Pitch: the face plane's normal against the camera axis, + = looking down.
    pitch = float(-np.arctan2(rot[2, 1], rot[2, 2]))
    # Head: the nose tip against the cheek line (yaw), roll from the eye line. Yaw is a proxy,
    # not an angle: what matters is that it moves with the head.
    cheek_a, cheek_b = p[234], p[454]
    half = np.hypot(*(cheek_b - cheek_a)) / 2 + 1e-6
    axis = (cheek_b - cheek_a) / (2 * half)
    yaw = float(((p[1] - (cheek_a + cheek_b) / 2) @ axis) / half)
    roll = float(np.arctan2(p[263, 1] - p[33, 1], p[263, 0] - p[33, 0]))
    return np.array([mouth, (eye_a + eye_b) / 2, brow, yaw, pitch, roll, eye_a, eye_b], np.float64)


def _head_frame(lm: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Face Mesh landmarks (normalised x, y, z) in the head's frame, in eye spans, and the
    rotation (rows: the head's x, y, z axes in image pixels). x: the image-left outer eye corner
    to the other; y: the forehead top (10) down the midline to the nose bridge (168); z = x cross y."""
    p = lm[:, :3] * (width, height, width)            # z is in x's scale
    x = p[263] - p[33]
    span = float(np.linalg.norm(x)) + 1e-9
    x = x / span
    y = p[168] - p[10]
    y = y - x * (y @ x)
    y = y / (np.linalg.norm(y) + 1e-9)
    rot = np.stack([x, y, np.cross(x, y)])
    return (p - p[168]) @ rot.T / span, rot


def _grey(rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float32) / 255
    return (rgba[..., :3] * a + GREY * (1 - a)).astype(np.uint8)


def _head_crop(img: np.ndarray, pose_lm: np.ndarray | None, alpha: np.ndarray) -> tuple[np.ndarray, tuple]:
    """A square crop around the avatar's head, enlarged so FaceMesh sees it well: placed from the
    pose's face points when Pose found the avatar, else from the top of the silhouette."""
    import cv2
    h, w = img.shape[:2]
    if pose_lm is not None and pose_lm[[0, 7, 8], 3].min() > 0.3:
        pts = pose_lm[[0, 2, 5, 7, 8, 9, 10], :2] * (w, h)
        cx, cy = pts[0]
        size = max(2.4 * np.ptp(pts[:, 0]), 60.0)
    else:
        rows = np.nonzero(alpha.max(1) > 128)[0]
        if rows.size == 0:
            return np.zeros((0, 0, 3), np.uint8), (0, 0, 1)
        top = int(rows[0])
        cols = np.nonzero(alpha[top:top + max(8, h // 8)].max(0) > 128)[0]
        cx, size = float(cols.mean()), 0.4 * h
        cy = top + 0.45 * size
    half = int(size / 2)
    x0, y0 = int(cx) - half, int(cy) - half
    pad = cv2.copyMakeBorder(img, half, half, half, half, cv2.BORDER_CONSTANT, value=(GREY, GREY, GREY))
    crop = pad[y0 + half:y0 + 3 * half, x0 + half:x0 + 3 * half]
    out = cv2.resize(crop, (384, 384), interpolation=cv2.INTER_CUBIC)
    return out, (x0, y0, 2 * half)


def limb_angles(lm: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Angle (atan2(dx, dy), pixels) and visibility of every LIMBS entry."""
    ang = np.empty(len(LIMBS))
    vis = np.empty(len(LIMBS))
    for i, (a, b) in enumerate(LIMBS.values()):
        dx, dy = (lm[b, 0] - lm[a, 0]) * width, (lm[b, 1] - lm[a, 1]) * height
        ang[i] = np.arctan2(dx, dy)
        inside = all(-0.02 <= lm[k, 0] <= 1.02 and -0.02 <= lm[k, 1] <= 1.02 for k in (a, b))
        vis[i] = min(lm[a, 3], lm[b, 3]) if inside else 0.0
    return ang, vis


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 5 or np.std(a[ok]) < 1e-9 or np.std(b[ok]) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def blink_events(eye: np.ndarray) -> list[int]:
    """Frames where each blink closes: the first frame of a run where the eye opening drops below
    65 % of its running (1.5 s) median, as a person's blink does. (Not the run's deepest point:
    a closed eye lies flat for 2-4 frames, and which of them Face Mesh reads lowest is noise; on
    d9 that moved 6 of 14 matched blinks by more than 2 frames.)"""
    n = len(eye)
    ok = np.isfinite(eye)
    if ok.sum() < 10:
        return []
    filled = np.where(ok, eye, np.nanmedian(eye))
    k = min(45, n) // 2
    padded = np.pad(filled, k, mode="edge")
    base = np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * k + 1), axis=1)[:n]
    low = (filled < 0.65 * base) & ok
    events, i = [], 0
    while i < n:
        if low[i]:
            j = i
            while j + 1 < n and low[j + 1]:
                j += 1
            if j - i < 20:                 # longer than ~0.6 s is a squint or a closed-eye laugh
                events.append(i)
            i = j + 1
        else:
            i += 1
    return events


# ------------------------------------------------------------------------------------------------
# One clip
# ------------------------------------------------------------------------------------------------

@dataclass
class ClipRun:
    name: str
    fps: float
    person_face: list[np.ndarray | None] = field(default_factory=list)
    avatar_face: list[np.ndarray | None] = field(default_factory=list)
    # Face Mesh's landmarks (normalised, x y z) behind person_face / avatar_face, for re-measuring.
    person_landmarks: list[np.ndarray | None] = field(default_factory=list)
    avatar_landmarks: list[np.ndarray | None] = field(default_factory=list)
    person_pose: list[np.ndarray | None] = field(default_factory=list)
    person_size: tuple[int, int] = (0, 0)
    avatar_pose: list[np.ndarray | None] = field(default_factory=list)
    inside: list[bool] = field(default_factory=list)
    conds: list[Conditioning] = field(default_factory=list)
    gestures: list[tuple[str, float]] = field(default_factory=list)
    wall_s: float = 0.0


def run_clip(name: str, generator: str = "rig2d", character: str = "nova", size: int = 512,
             device: str | None = None, seconds: float | None = None) -> ClipRun:
    """Render one clip through render_file and measure the person and the avatar per frame."""
    import time

    import cv2
    import mediapipe as mp

    from liveavatar.conditioning import load_mapping
    from liveavatar.offline.render import RenderOptions, render_file

    src = clip_path(name)
    mirror = load_mapping(None).tracking.mirror
    rec = ClipRun(name, 0.0)
    person_mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
    avatar_mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True)
    avatar_pose = mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1)   # a smooth video
    limit_ns = None if seconds is None else int(seconds * 1e9)

    def on_cues(frame: CapturedFrame, cues: Cues) -> None:
        if limit_ns is not None and frame.t_capture_ns > limit_ns:
            return
        img = frame.image[:, ::-1] if mirror else frame.image
        img = np.ascontiguousarray(img)
        h, w = img.shape[:2]
        rec.person_size = (w, h)
        res = person_mesh.process(img)
        face_lm = None if not res.multi_face_landmarks else _landmarks(res.multi_face_landmarks[0])
        rec.person_landmarks.append(face_lm)
        rec.person_face.append(None if face_lm is None else face_measures(face_lm, w, h))
        if cues.pose.present:
            lm = cues.pose.landmarks.copy()
            if mirror:
                lm = lm[_POSE_MIRROR]
                lm[:, 0] = 1.0 - lm[:, 0]
            rec.person_pose.append(lm)
        else:
            rec.person_pose.append(None)

    def on_frame(cond: Conditioning, rgba: np.ndarray) -> None:
        if limit_ns is not None and cond.t_tick_ns > limit_ns:
            return
        rec.conds.append(cond)
        a = rgba[..., 3]
        rec.inside.append(bool(max(a[0].max(), a[-1].max(), a[:, 0].max(), a[:, -1].max()) < 16))
        img = _grey(rgba)
        h, w = img.shape[:2]
        res = avatar_pose.process(img)
        plm = None if res.pose_landmarks is None else _landmarks(res.pose_landmarks, visibility=True)
        rec.avatar_pose.append(plm)
        crop, _ = _head_crop(img, plm, a)
        fres = avatar_mesh.process(crop) if crop.size else None
        alm = None if fres is None or not fres.multi_face_landmarks else _landmarks(fres.multi_face_landmarks[0])
        rec.avatar_landmarks.append(alm)
        rec.avatar_face.append(None if alm is None else face_measures(alm, crop.shape[1], crop.shape[0]))

    with tempfile.TemporaryDirectory(prefix="liveavatar-fidelity-") as tmp:
        opts = RenderOptions(input=src, output=Path(tmp) / f"{name}.mp4", size=size, generator=generator,
                             character=character, device=device)
        t0 = time.perf_counter()
        try:
            result = render_file(opts, on_cues=on_cues, on_frame=on_frame)
        finally:
            for m in (person_mesh, avatar_mesh, avatar_pose):
                m.close()
        rec.wall_s = time.perf_counter() - t0
    rec.fps = result.frames / max(result.seconds, 1e-9)
    rec.gestures = [g for g in result.gestures if limit_ns is None or g[1] * 1e9 <= limit_ns]
    del cv2
    return rec


def _landmarks(lms: Any, visibility: bool = False) -> np.ndarray:
    from liveavatar.perception.trackers import landmarks_to_array
    n = len(lms.landmark)
    return landmarks_to_array(lms, n, with_visibility=visibility)


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

def _series(items: list[np.ndarray | None], k: int, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    for i, v in enumerate(items[:n]):
        if v is not None:
            out[i] = v[k]
    return out


def face_figures(rec: ClipRun) -> dict[str, Any]:
    n = min(len(rec.person_face), len(rec.avatar_face), len(rec.conds))
    out: dict[str, Any] = {"frames": n}
    found = sum(v is not None for v in rec.avatar_face[:n])
    out["avatar_face_found_pct"] = 100.0 * found / max(n, 1)
    for k, m in enumerate(FACE_MEASURES):
        out[m] = _corr(_series(rec.person_face, k, n), _series(rec.avatar_face, k, n))
    # The chain: the person against what the conditioner asked the generator for.
    asked = {"mouth_open": [max(c.face[FP["mouth_open"]], 1 - c.visemes[0]) for c in rec.conds[:n]],
             "eye_open": [1 - 0.5 * (c.face[FP["blink_left"]] + c.face[FP["blink_right"]]) for c in rec.conds[:n]],
             "brow_raise": [0.5 * (c.face[FP["brow_raise_left"]] + c.face[FP["brow_raise_right"]])
                            for c in rec.conds[:n]],
             "head_yaw": [c.head[0] for c in rec.conds[:n]], "head_pitch": [c.head[1] for c in rec.conds[:n]],
             "head_roll": [-c.head[2] for c in rec.conds[:n]]}
    out["chain"] = {m: _corr(_series(rec.person_face, FACE_MEASURES.index(m), n), np.asarray(v, np.float64))
                    for m, v in asked.items()}
    # Blinks: the person's eye opening (both eyes) against the avatar's.
    person_eye, avatar_eye = _series(rec.person_face, 1, n), _series(rec.avatar_face, 1, n)
    pb, ab = blink_events(person_eye), blink_events(avatar_eye)
    matched = sum(any(abs(p - a) <= BLINK_TOLERANCE for a in ab) for p in pb)
    out["blinks_person"], out["blinks_avatar"], out["blinks_matched"] = len(pb), len(ab), matched
    return out


def body_figures(rec: ClipRun) -> dict[str, Any]:
    n = min(len(rec.person_pose), len(rec.avatar_pose), len(rec.conds))
    pw, ph = rec.person_size
    present = [i for i in range(n) if rec.person_pose[i] is not None]
    detected = [i for i in present if rec.avatar_pose[i] is not None]
    errs = []
    for i in detected:
        person, avatar = rec.person_pose[i], rec.avatar_pose[i]
        assert person is not None and avatar is not None
        pa, pv = limb_angles(person, pw, ph)
        aa, _ = limb_angles(avatar, 1, 1)
        use = pv >= VISIBLE
        d = (aa[use] - pa[use] + np.pi) % (2 * np.pi) - np.pi
        errs.extend(np.degrees(np.abs(d)).tolist())
    roots = np.array([c.root for c in rec.conds[:n]]) if n else np.zeros((0, 3))
    return {"frames": n, "person_frames": len(present),
            "avatar_detected_pct": 100.0 * len(detected) / max(len(present), 1),
            "limb_error_deg": float(np.mean(errs)) if errs else float("nan"),
            "limb_error_p95_deg": float(np.percentile(errs, 95)) if errs else float("nan"),
            "inside_pct": 100.0 * sum(rec.inside[:n]) / max(n, 1),
            "root_x_range": [float(roots[:, 0].min()), float(roots[:, 0].max())] if n else [0.0, 0.0],
            "scale_range": [float(roots[:, 2].min()), float(roots[:, 2].max())] if n else [1.0, 1.0]}


def trigger_figures(rec: ClipRun) -> dict[str, Any]:
    started = [c.action for prev, c in zip([None, *rec.conds[:-1]], rec.conds, strict=True)
               if c.action != "none" and (prev is None or prev.action != c.action)]
    minutes = len(rec.conds) / max(rec.fps, 1e-9) / 60.0
    return {"gestures": [g for g, _ in rec.gestures], "actions": started,
            "per_minute": (len(rec.gestures) + len(started)) / max(minutes, 1e-9)}


def emotion_segments(rec: ClipRun, emotions: tuple[str, ...], segment_s: float = 1.0) -> list[dict[str, Any]]:
    """The dominant emotion shown in each segment, with the person's mean measures beside it."""
    step = max(1, int(round(segment_s * rec.fps)))
    out = []
    for s in range(0, len(rec.conds), step):
        conds = rec.conds[s:s + step]
        emo = np.mean([c.emotion[:len(emotions)] for c in conds], axis=0)
        faces = [f for f in rec.person_face[s:s + step] if f is not None]
        person = np.mean(faces, axis=0) if faces else np.full(8, np.nan)
        out.append({"t_s": round(s / rec.fps, 2), "shown": emotions[int(np.argmax(emo))],
                    "weight": round(float(emo.max()), 2),
                    "person": {m: round(float(person[k]), 3) for k, m in enumerate(FACE_MEASURES[:3])}})
    return out


def run(clips: list[str] | None = None, generator: str = "rig2d", character: str = "nova", size: int = 512,
        device: str | None = None, seconds: float | None = None) -> dict:
    from liveavatar.types import EMOTIONS
    clips = list(clips or (*FACE_CLIPS, *BODY_CLIPS))
    base = report.baseline_ms()
    rows: list[dict] = []
    details: dict[str, dict[str, Any]] = {}
    face: dict[str, dict[str, Any]] = {}
    body: dict[str, dict[str, Any]] = {}
    trig: dict[str, dict[str, Any]] = {}
    for name in clips:
        rec = run_clip(name, generator, character, size, device, seconds)
        d: dict[str, Any] = {"wall_s": round(rec.wall_s, 1), "trigger": trigger_figures(rec),
                             "emotion_segments": emotion_segments(rec, EMOTIONS)}
        details[name] = d
        trig[name] = d["trigger"]
        if name in FACE_CLIPS:
            face[name] = d["face"] = face_figures(rec)
        d["body"] = body[name] = body_figures(rec)

    def mean_of(table: dict, key: str) -> float:
        vals = [v[key] for v in table.values() if np.isfinite(v[key])]
        return float(np.mean(vals)) if vals else float("nan")

    def per_clip(table: dict, key: str, fmt: str = "{:.2f}") -> str:
        return ", ".join(f"{k} {fmt.format(v[key])}" for k, v in table.items())

    goals = {"mouth_open": 0.8, "eye_open": 0.7, "brow_raise": 0.6, "head_yaw": 0.8, "head_pitch": 0.8,
             "head_roll": 0.8}
    if face:
        for m, goal in goals.items():
            chain = ", ".join(f"{k} {v['chain'][m]:.2f}" for k, v in face.items())
            rows.append(report.row(f"face: {m} correlation", mean_of(face, m), None, "r",
                                   f"{per_clip(face, m)}; conditioning vs person: {chain}; goal >= {goal}"))
        pb = sum(v["blinks_person"] for v in face.values())
        mb = sum(v["blinks_matched"] for v in face.values())
        rows.append(report.row("face: blinks within 2 frames", 100.0 * mb / pb if pb else float("nan"), None, "%",
                               f"{mb}/{pb} of the person's blinks; avatar blinked "
                               f"{sum(v['blinks_avatar'] for v in face.values())} times; goal >= 90"))
        rows.append(report.row("face: avatar face found by FaceMesh", mean_of(face, "avatar_face_found_pct"), None,
                               "%", per_clip(face, "avatar_face_found_pct", "{:.0f}")))
    rows.append(report.row("body: avatar detected by Pose", mean_of(body, "avatar_detected_pct"), None, "%",
                           f"{per_clip(body, 'avatar_detected_pct', '{:.0f}')}; goal >= 95"))
    rows.append(report.row("body: limb angle error", mean_of(body, "limb_error_deg"),
                           mean_of(body, "limb_error_p95_deg"), "deg",
                           f"{per_clip(body, 'limb_error_deg', '{:.1f}')}; limbs the person shows clearly; goal <= 15"))
    rows.append(report.row("body: avatar inside the canvas", min(v["inside_pct"] for v in body.values()), None, "%",
                           f"{per_clip(body, 'inside_pct', '{:.0f}')}; goal 100"))
    face_trig = {k: v for k, v in trig.items() if k in FACE_CLIPS}
    if face_trig:
        rows.append(report.row("false triggers on the face clips", mean_of(face_trig, "per_minute"), None, "/min",
                               "; ".join(f"{k}: {v['gestures'] + v['actions'] or 'none'}"
                                         for k, v in face_trig.items()) + "; goal 0"))
    base_end = report.baseline_ms()
    return report.result("fidelity", rows, generator=generator, character=character, size=size, clips=details,
                         baseline_ms={"start": base, "end": base_end})
