"""rig2d rendering behaviour on real renders: transparency, batching, determinism, clamping of
broken conditioning, live character switching, idle life, actions, emotions, eyes and mouth."""
from __future__ import annotations

import numpy as np
import pytest

from liveavatar.generation.rig2d import Rig2DGenerator
from liveavatar.types import ACTIONS, BONE_INDEX, EMOTIONS, FP, Conditioning

from .conftest import over_background

B = BONE_INDEX
FACE = (slice(80, 230), slice(176, 336))     # rows, cols of the head at rest (512 px)


def cond(**kw) -> Conditioning:
    c = Conditioning.neutral(t_tick_ns=kw.pop("t_ns", 0))
    c.body_present = kw.pop("present", 1.0)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def emotion(name: str) -> Conditioning:
    c = cond()
    c.emotion = np.eye(len(EMOTIONS), dtype=np.float32)[EMOTIONS.index(name)]
    c.emotion_intensity = 1.0
    return c


def varied(i: int) -> Conditioning:
    rng = np.random.default_rng(i)
    c = cond(t_ns=int(i * 33e6))
    c.bone_angles = c.bone_angles + rng.uniform(-1.2, 1.2, len(B)).astype(np.float32)
    c.root = np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.1, 0.1), rng.uniform(0.6, 1.4)], np.float32)
    c.head = rng.uniform(-0.5, 0.5, 3).astype(np.float32)
    c.face = rng.uniform(0, 1, len(c.face)).astype(np.float32)
    c.emotion = rng.dirichlet(np.ones(len(EMOTIONS))).astype(np.float32)
    c.visemes = rng.dirichlet(np.ones(6)).astype(np.float32)
    c.action, c.action_phase, c.action_weight = ACTIONS[i % len(ACTIONS)], rng.uniform(), rng.uniform()
    return c


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(over_background(a).astype(int) - over_background(b).astype(int)).mean())


def test_output_is_rgba_on_a_transparent_background(rig):
    (f,) = rig.render([cond()], ["nova"])
    assert f.shape == (512, 512, 4) and f.dtype == np.uint8
    alpha = f[..., 3]
    assert alpha[:10].max() == 0 and alpha[:, :40].max() == 0            # background transparent
    assert (alpha == 255).mean() > 0.08                                  # a solid character
    assert alpha[150, 256] == 255 and alpha[300, 256] == 255             # head-to-hips column
    # Straight alpha: the skin colour is the same at the soft edge as in the middle of the face.
    ys, xs = np.nonzero((alpha > 60) & (alpha < 200))
    assert len(ys) > 100


def test_other_sizes_are_the_same_picture_scaled(rig, rig_small):
    a = rig_small.render([cond()], ["nova"])[0].astype(np.float32)
    b = rig.render([cond()], ["nova"])[0].astype(np.float32)
    b_down = b.reshape(256, 2, 256, 2, 4).mean((1, 3))
    assert np.abs(a[..., 3] - b_down[..., 3]).mean() < 6


def test_batched_equals_one_by_one_and_cpu_is_deterministic(rig):
    conds = [varied(i) for i in range(6)]
    chars = ["nova", "bolt", "nova", "nova", "bolt", "nova"]
    batched = rig.render(conds, chars)
    single = np.stack([rig.render([c], [n])[0] for c, n in zip(conds, chars)])
    # Tiles are sized for the largest part in a batch, so float rounding of the sampling grid
    # may differ by a level or two on a handful of edge pixels.
    assert np.abs(batched.astype(int) - single.astype(int)).max() <= 2
    assert (batched != single).mean() < 1e-3
    again = rig.render(conds, chars)
    assert np.array_equal(batched, again)
    assert all(diff(batched[i], batched[i + 1]) > 1 for i in range(5))   # really different frames


def test_nan_and_out_of_range_conditioning_is_clamped(rig):
    broken = cond()
    broken.bone_angles = np.full(len(B), np.nan, np.float32)
    broken.root = np.array([0.1, -np.inf, 1e9], np.float32)
    broken.head = np.array([np.nan, 50.0, -50.0], np.float32)
    broken.face = np.array([np.nan, np.inf, -7, 9, np.nan, 3, -1, np.inf, 0, np.nan], np.float32)
    broken.visemes = np.array([np.nan, -1, 0, 0, 0, 0], np.float32)
    broken.emotion = np.array([np.nan, np.inf, -3, 0, 0, 0, 0, 5, 5], np.float32)  # + unknown extras
    broken.action, broken.action_phase, broken.action_weight = "moonwalk", np.nan, np.inf
    broken.body_present, broken.speaking = np.nan, -4.0
    expected = cond(present=0.0)
    expected.root = np.array([0.1, -1.0, 2.0], np.float32)
    expected.head = np.array([0.0, 0.8, -0.8], np.float32)
    expected.face = np.clip(np.nan_to_num(broken.face, nan=0, posinf=1, neginf=-1), 0, 1)
    expected.face[FP["gaze_x"]], expected.face[FP["gaze_y"]] = -1.0, 1.0
    expected.face[FP["blink_right"]] = 1.0
    a, b = rig.render([broken, expected], ["nova", "nova"])
    assert np.array_equal(a, b)
    assert a[..., 3].max() == 255


def test_live_character_switch_never_skips_a_frame():
    g = Rig2DGenerator("cpu", 256)
    g.load()
    frames = []
    for i in range(6):
        if i == 2:
            g.prepare_character("bolt")     # as the service does on a switch, between frames
        frames.append(g.render([cond(t_ns=i * 33_000_000)], ["nova" if i < 3 else "bolt"])[0])
    assert all(f[..., 3].max() == 255 for f in frames)
    assert diff(frames[2], frames[3]) > 5 * diff(frames[1], frames[2])


def test_nobody_tracked_still_breathes_and_blinks(rig):
    t = np.arange(0, 4.0, 1 / 15)
    frames = np.concatenate([rig.render([cond(present=0.0, t_ns=int(s * 1e9)) for s in chunk],
                                        ["nova"] * len(chunk)) for chunk in np.array_split(t, 4)])
    assert min(diff(frames[0], f) for f in frames[5::5]) > 0.02            # never frozen
    # A blink happens within 4 s: the dark pupils vanish from the eye region for a moment (against
    # the frames 130 ms either side: the idle sway moves the head through the fixed window).
    eyes = frames[:, 128:158, 220:292].astype(int)
    dark = ((eyes[..., :3].sum(-1) < 250) & (eyes[..., 3] == 255)).sum((1, 2))
    dip = min(dark[i] / max(min(dark[i - 2], dark[i + 2]), 1) for i in range(2, len(dark) - 2))
    assert np.median(dark) > 150 and dip < 0.7, dark


@pytest.mark.parametrize("action", [a for a in ACTIONS if a != "none"])
def test_every_action_moves_the_character(rig, action):
    rest = rig.render([cond()], ["nova"])[0]
    moved = [rig.render([cond(action=action, action_phase=p, action_weight=1.0)], ["nova"])[0]
             for p in (0.125, 0.375, 0.6)]
    assert max(diff(rest, m) for m in moved) > 0.4
    assert max(diff(moved[0], m) for m in moved[1:]) > 0.2                 # the clip plays by phase


def _top(frame):
    return int(np.nonzero(frame[..., 3].max(1) > 128)[0][0])


def test_jump_lifts_and_cheer_raises_the_hands(rig):
    rest = rig.render([cond()], ["nova"])[0]
    jump = rig.render([cond(action="jump", action_phase=0.5, action_weight=1.0)], ["nova"])[0]
    cheer = rig.render([cond(action="cheer", action_phase=0.0, action_weight=1.0)], ["nova"])[0]
    bottom = lambda f: int(np.nonzero(f[..., 3].max(1) > 128)[0][-1])   # noqa: E731
    assert bottom(jump) < bottom(rest) - 40
    assert _top(cheer) < _top(rest) - 60
    half = rig.render([cond(action="cheer", action_phase=0.0, action_weight=0.5)], ["nova"])[0]
    arms = lambda f: _top(f[:, np.r_[0:180, 332:512]])   # noqa: E731  (columns beside the head)
    assert arms(cheer) < arms(half) - 20 < arms(rest) - 40                 # weight blends


def test_spin_turns_the_body_edge_on_at_a_quarter(rig):
    def width(phase):
        f = rig.render([cond(action="spin", action_phase=phase, action_weight=1.0)], ["nova"])[0]
        cols = np.nonzero(f[..., 3].max(0) > 128)[0]
        return cols[-1] - cols[0]
    assert width(0.25) < 0.3 * width(0.0)
    assert abs(width(0.5) - width(0.0)) < 6


def test_emotions_change_the_face_and_differ_from_each_other(rig):
    frames = rig.render([emotion(e) for e in EMOTIONS], ["nova"] * len(EMOTIONS))
    faces = [f[FACE] for f in frames]
    for i, e in enumerate(EMOTIONS[1:], 1):
        assert diff(faces[0], faces[i]) > 3.0, e
    for i in range(1, len(EMOTIONS)):
        for j in range(i + 1, len(EMOTIONS)):
            assert diff(faces[i], faces[j]) > 2.0, (EMOTIONS[i], EMOTIONS[j])
    # A 50/50 mix sits between its two parts.
    mix = cond()
    mix.emotion = np.zeros(len(EMOTIONS), np.float32)
    mix.emotion[[0, EMOTIONS.index("angry")]] = 0.5
    m = rig.render([mix], ["nova"])[0][FACE]
    assert 0.2 < diff(faces[0], m) / diff(faces[0], faces[EMOTIONS.index("angry")]) < 0.8


def test_gaze_moves_the_pupils_and_blink_closes_the_eyes(rig):
    def white_centroid(frame):
        eye = frame[130:156, 220:292].astype(int)
        white = (eye[..., :3] > 225).all(-1) & (eye[..., 3] == 255)
        return np.nonzero(white)[1].mean()
    look = lambda gx: rig.render([cond(face=np.eye(10, dtype=np.float32)[FP["gaze_x"]] * gx)], ["nova"])[0]  # noqa
    # Looking to the image's right shows more white on the left of each eye.
    assert white_centroid(look(-1.0)) - white_centroid(look(1.0)) > 2
    f = np.zeros(10, np.float32)
    f[FP["blink_left"]] = 1.0
    left_closed = rig.render([cond(face=f)], ["nova"])[0]
    open_ = rig.render([cond()], ["nova"])[0]
    # Character's left eye is on the image's right: only that side changes.
    assert diff(open_[130:156, 256:292], left_closed[130:156, 256:292]) > 5
    assert diff(open_[130:156, 220:256], left_closed[130:156, 220:256]) < 0.5


def test_visemes_and_jaw_shape_the_mouth(rig):
    def mouth_dark(c):
        m = rig.render([c], ["nova"])[0][160:196, 228:284].astype(int)
        return ((m[..., :3].sum(-1) < 330) & (m[..., 3] == 255)).sum()
    shut = mouth_dark(cond())
    opened = [mouth_dark(cond(face=np.eye(10, dtype=np.float32)[FP["mouth_open"]] * v)) for v in (0.3, 0.6, 1.0)]
    assert shut < opened[0] < opened[1] < opened[2]
    vis = lambda k: cond(visemes=np.eye(6, dtype=np.float32)[k])  # noqa: E731
    shapes = [rig.render([vis(k)], ["nova"])[0][160:196, 228:284] for k in range(1, 6)]
    assert min(diff(shapes[i], shapes[j]) for i in range(5) for j in range(i + 1, 5)) > 0.5


def test_generator_benchmark_reports_every_batch_size():
    from liveavatar.bench import generator as bench
    res = bench.run("rig2d", device="cpu", batches=[1, 3], size=128, frames=3)
    rows = {r["metric"].split(" (")[0] + " " + r["metric"].split("B=")[1].split(",")[0]: r for r in res["rows"]}
    for b in (1, 3):
        per_session, total = rows[f"fps per session {b}"], rows[f"total fps {b}"]
        assert per_session["median"] > 0 and total["median"] == pytest.approx(b * per_session["median"])
        assert rows[f"ms per batch {b}"]["p95"] >= rows[f"ms per batch {b}"]["median"]
    assert res["info"]["generator"] == "rig2d" and res["machine"]["cores"] >= 1
    # Conditionings differ per session and per frame, so nothing can be cached.
    a, b = bench.sample_conditionings(2, 0), bench.sample_conditionings(2, 1)
    assert not np.allclose(a[0].bone_angles, a[1].bone_angles)
    assert not np.allclose(a[0].bone_angles, b[0].bone_angles)


def test_a_nod_up_or_down_moves_the_brows_with_the_eyes(rig):
    """The head turn's parallax warp moves the face's centre more than its edge, so it used to
    carry the eyes farther than the brows: looking up pulled the brows 4 px nearer the eyes than
    looking down did, and Face Mesh read nods as brow raises. Up and down must now leave the same
    brow-to-eye gap (a nod foreshortens it alike both ways)."""
    def render(pitch: float, **face: float) -> np.ndarray:
        c = cond()
        c.face_present = 1.0
        c.head = np.array([0.0, pitch, 0.0], np.float32)
        for k, v in face.items():
            c.face[FP[k]] = v
        return rig.render([c], ["nova"])[0].astype(int)

    def changed_row(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.nonzero(np.abs(a - b).sum(-1) > 30)[0].mean())

    gaps, eyes = [], []
    for pitch in (-0.4, 0.4):
        still = render(pitch)
        eye = changed_row(still, render(pitch, blink_left=1.0, blink_right=1.0))
        brow = changed_row(still, render(pitch, brow_raise_left=1.0, brow_raise_right=1.0))
        gaps.append(eye - brow)
        eyes.append(eye)
    assert eyes[1] - eyes[0] > 10, eyes           # the nod does move the face (~26 px here)
    assert abs(gaps[0] - gaps[1]) < 1.5, gaps     # 4.1 px apart before the brows followed the eyes
