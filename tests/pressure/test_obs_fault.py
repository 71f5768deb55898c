"""OBS is killed (SIGKILL, by PID) and restarted while the service's MPEG-TS feed for it is set
up: the service keeps rendering and sending without errors, and the restarted OBS shows the
avatar again from the same, still-running feed. Real OBS 29 headless."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from liveavatar.server.config import ServerConfig
from tests.obs.conftest import cli_env, run_cli, screenshot
from tests.obs.headless import HeadlessObs
from tests.obs.headless import free_port as free_udp_port
from tests.server.fakes import fake_perception_stages
from tests.server.harness import ServerThread, free_port, http, wait_until

pytestmark = [pytest.mark.obs, pytest.mark.slow]
SOURCE = "LiveAvatar default"
SIZE = 128


def shows_avatar(shot: np.ndarray) -> bool:
    """The keyed media source shows an opaque character over a transparent background."""
    alpha = shot[..., 3]
    return 0.05 < (alpha > 250).mean() < 0.95 and (alpha < 5).mean() > 0.05


def test_obs_killed_and_restarted_with_a_feed_set_up(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    cfg = ServerConfig(port=free_port(), size=SIZE, demo=False)
    server = ServerThread(cfg, fake_perception_stages(cfg)).start()
    feed = f"udp://127.0.0.1:{free_udp_port(2)}"
    obs = HeadlessObs(tmp_path / "obs1", width=640, height=360).start()
    obs2 = None
    try:
        r = run_cli(cli_env(obs), "obs", "setup", "--service", server.url, "--feed", feed, "--mode", "media")
        assert r.returncode == 0, r.stderr
        with obs.client() as c:
            assert shows_avatar(screenshot(c, SOURCE, timeout=30))
        s = server.engine.sessions["default"]
        sink = s.sinks["mpegts"]
        obs.obs.kill()          # OBS crashes
        obs.obs.wait(10)
        written = sink.stats()["written"]
        rendered = s.rendered.count
        wait_until(lambda: sink.stats()["written"] > written + 60, 30, what="the feed to keep sending")
        assert s.rendered.count > rendered + 60
        st = sink.stats()
        # With the reader gone the kernel refuses some datagrams (ICMP port unreachable): those
        # frames are skipped and counted as sink errors; the feed goes on, and every frame handed
        # to it is accounted for (written, counted error, or counted drop).
        assert st["running"], st
        assert st["written"] + st["errors"] + st["dropped"] >= st["received"] - 1, st
        assert http(server.url + "/health")[0] == 200
        obs.stop()              # its Xvfb
        # OBS comes back; setup again without asking for a new feed: the running one is shown.
        obs2 = HeadlessObs(tmp_path / "obs2", width=640, height=360).start()
        r = run_cli(cli_env(obs2), "obs", "setup", "--service", server.url, "--feed", feed, "--mode", "media",
                    "--no-start-feed")
        assert r.returncode == 0, r.stderr
        with obs2.client() as c:
            wait_until(lambda: shows_avatar(screenshot(c, SOURCE, timeout=30)), 30,
                       what="the restarted OBS to show the avatar")
        assert s.sinks["mpegts"] is sink, "the feed was restarted instead of surviving"
        assert not [rec for rec in caplog.records if rec.name.startswith("liveavatar")], \
            [rec.getMessage() for rec in caplog.records]
    finally:
        for o in (obs, obs2):
            if o is not None:
                o.stop()
        server.stop()
