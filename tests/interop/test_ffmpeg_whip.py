"""FFmpeg's own WHIP muxer (FFmpeg 8 in the PyAV wheel) publishing a real clip to /whip: a
client we did not write. Real service (generator, conditioner); perception is the stand-in
that counts the frames it is handed (tests/server/fakes.py)."""
from __future__ import annotations

import datetime
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from liveavatar.server.config import ServerConfig
from liveavatar.server.signalling import FFMPEG_WHIP_HINT
from tests.media import path as media_path
from tests.server.conftest import ServerThread, free_port, wait_until
from tests.server.fakes import fake_perception_stages

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server():
    cfg = ServerConfig(port=free_port(), size=128, demo=False)
    srv = ServerThread(cfg, fake_perception_stages(cfg)).start()
    yield srv
    srv.stop()


def p256_certificate(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ffmpeg-whip")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "whip.crt", folder / "whip.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def ffmpeg_publish(url: str, seconds: float, *cert_and_key: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.interop.ffmpeg_whip", url,
                             str(media_path("astronaut_talk.mp4")), str(seconds), *map(str, cert_and_key)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ffmpeg_whip_muxer_camera_reaches_the_avatar(server, tmp_path):
    s = server.engine.sessions["default"]
    processed = s.worker.processed
    proc = ffmpeg_publish(server.url + "/whip/default", 8, *p256_certificate(tmp_path))
    try:
        wait_until(lambda: s.ingest_kind == "webrtc", timeout=30, what="FFmpeg's WHIP session to connect")
        assert s.state()["camera"] is True and s.state()["ingest"] == "webrtc"
        wait_until(lambda: s.worker.processed > processed + 60, timeout=30, what="perception to see frames")
        wait_until(lambda: s.perception.audio_chunks > 20, timeout=10, what="the Opus voice")
        cues = s.last_cues
        assert cues is not None and tuple(cues.image_size) == (320, 240)  # the muxer's picture
        rendered = s.rendered.count
        wait_until(lambda: s.rendered.count > rendered + 10, timeout=10, what="the avatar to keep rendering")
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "sent" in out
    # The muxer DELETEs its resource when it closes: the camera goes and the avatar idles.
    wait_until(lambda: s.ingest is None, timeout=20, what="the camera to be released")


def test_ffmpeg_whip_default_certificate_fails_with_a_hint_in_the_log(server, caplog):
    with caplog.at_level(logging.WARNING, logger="liveavatar.server"):
        proc = ffmpeg_publish(server.url + "/whip/hint", 3)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0 and "Input/output error" in err
        wait_until(lambda: FFMPEG_WHIP_HINT in caplog.text, timeout=10, what="the service's hint")
    time.sleep(0.2)
    server.call(server.engine.remove("hint"))
