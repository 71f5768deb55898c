"""Our smoothing logic (pure numpy): removes jitter, follows fast motion, holds and eases."""
import numpy as np

from liveavatar.perception.filters import OneEuroFilter, PartFilter


def test_one_euro_removes_jitter_but_follows_fast_motion():
    rng = np.random.default_rng(0)
    t = np.arange(300) / 30
    still = 0.5 + rng.normal(0, 0.004, (300, 2))           # a hand held still, tracker jitter
    f = OneEuroFilter((2,), min_cutoff=1.5, beta=4.0)
    out = np.array([f(x, s).copy() for x, s in zip(still, t)])
    assert out[30:].std(axis=0).max() < 0.5 * still[30:].std(axis=0).min()

    swing = 0.5 + 0.3 * np.sin(2 * np.pi * 1.0 * t)          # a fast 1 Hz arm swing
    f = OneEuroFilter((1,), min_cutoff=1.5, beta=4.0)
    out = np.array([f(np.array([x]), s)[0] for x, s in zip(swing, t)])
    # Lag: the best-matching delay of the output is at most one frame at 30 fps.
    errs = [np.abs(out[40 + d:] - swing[40:len(swing) - d]).mean() for d in range(6)]
    assert int(np.argmin(errs)) <= 1
    assert np.abs(out[40:] - swing[40:]).max() < 0.08


def test_part_holds_decays_and_eases_back_instead_of_jumping():
    pf = PartFilter(3, lost_half_life_s=0.3, reacquire_s=0.15)
    a = np.zeros((3, 4), np.float32)
    a[:, 3] = 1.0
    for i in range(10):
        pf.observe(a, 0.9, i / 30)
    for i in range(10, 19):                                    # lost for 0.3 s
        pf.lose(i / 30)
    held = pf.part()
    assert not held.present and np.allclose(held.landmarks[:, :3], 0)
    assert abs(held.confidence - 0.9 * 0.5 ** ((18 / 30 - 10 / 30) / 0.3)) < 1e-6
    b = a.copy()
    b[:, 0] = 0.5                                               # found again, far away
    xs = []
    for i in range(19, 30):
        pf.observe(b, 0.9, i / 30)
        xs.append(pf.part().landmarks[0, 0])
    assert xs[0] < 0.05, "no jump on the first frame back"
    assert np.all(np.diff(xs) > -1e-6) and max(np.diff(xs)) < 0.25
    assert xs[-1] > 0.45 and pf.part().present


def test_the_blink_filter_passes_a_closing_eye_within_a_frame_and_stays_still_when_open():
    """The pipeline's expression filter: a real blink closes in 1-2 frames, so one frame after the
    eye shut the filtered blink is nearly full; an open eye's small jitter stays small."""
    from liveavatar.perception.expression import NEUTRAL_FEATURES
    from liveavatar.perception.filters import ExpressionFilter
    from liveavatar.perception.pipeline import _EXPR_BETA, _EXPR_D_CUTOFF, _EXPR_MIN_CUTOFF
    from liveavatar.types import FF

    f = ExpressionFilter(_EXPR_MIN_CUTOFF, _EXPR_BETA, NEUTRAL_FEATURES, d_cutoff=_EXPR_D_CUTOFF)
    rng = np.random.default_rng(0)
    x = NEUTRAL_FEATURES.copy()
    jitter = []
    for i in range(60):                                 # 2 s open, with +-0.03 of measurement noise
        x[FF["blink_left"]] = 0.03 * rng.standard_normal()
        f.observe(x, i / 30)
        jitter.append(float(f.value[FF["blink_left"]]))
    assert np.std(jitter[10:]) < 0.03
    x[FF["blink_left"]] = 1.0
    f.observe(x, 60 / 30)
    first = float(f.value[FF["blink_left"]])
    f.observe(x, 61 / 30)
    assert first > 0.7 and f.value[FF["blink_left"]] > 0.95, (first, f.value[FF["blink_left"]])
