"""The debug timecode survives what video does to it (scaling, blur, noise) and rejects
frames without one."""
from __future__ import annotations

import cv2
import numpy as np

from liveavatar.server import timecode
from tests.media import load_rgb


def test_avatar_strip_round_trip_through_scaling_blur_and_noise():
    strip = np.zeros((16, 1024, 3), np.uint8)
    values = (0xABCDEF, 123456, 200)
    timecode.draw(strip, values, timecode.AVATAR_FIELDS)
    assert timecode.read(strip, timecode.AVATAR_FIELDS) == values
    small = cv2.resize(strip, (700, 11), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(small, (5, 5), 1.5)
    noisy = np.clip(blurred.astype(int) + np.random.default_rng(0).integers(-30, 30, blurred.shape), 0,
                    255).astype(np.uint8)
    assert timecode.read(noisy, timecode.AVATAR_FIELDS) == values


def test_camera_stamp_survives_vp8_like_jpeg_compression():
    frame = cv2.resize(load_rgb("astronaut.png"), (640, 480))
    h = timecode.camera_strip_height(480)
    timecode.draw(frame[-h:], (9_999_999,), timecode.CAMERA_FIELDS)
    ok, jpg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 40])
    back = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
    assert timecode.read(back[-h:], timecode.CAMERA_FIELDS) == (9_999_999,)


def test_frames_without_a_stamp_are_rejected():
    img = load_rgb("messi5.jpg")
    assert timecode.read(img[-15:], timecode.CAMERA_FIELDS) is None
    stripes = np.zeros((16, 400, 3), np.uint8)
    stripes[:, ::2] = 255  # alternating columns: guard-like but the check byte fails
    assert timecode.read(stripes, timecode.AVATAR_FIELDS) is None


def test_wall_clock_mapping_and_wrap_around():
    wc = timecode.WallClockMap()
    import time
    now = time.monotonic_ns()
    stamp = wc.to_wall_ms(now - 120_000_000)  # captured 120 ms ago
    t = wc.capture_ns_from_stamp(stamp, now)
    assert abs((now - t) / 1e6 - 120) <= 1
    assert timecode.age_ms(timecode.MS_MOD - 5, 10) == 15  # across the 24-bit wrap
    assert wc.capture_ns_from_stamp((stamp + 60_000) % timecode.MS_MOD, now) is None  # a skewed clock
