"""Arbitrary datagrams into the VMC receiver and arbitrary JSON into the VTS handler: neither
ever raises; every answer is a VTS message with one line of text."""
from __future__ import annotations

import asyncio
import json
import math
import threading
from pathlib import Path
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveavatar.interop import vmc, vts
from liveavatar.runtime import LatestSlot

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
ARG = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-2**31, 2**31 - 1),
                st.text(max_size=12))
ADDRESSES = st.sampled_from(["/VMC/Ext/Bone/Pos", "/VMC/Ext/Blend/Val", "/VMC/Ext/Blend/Apply",
                             "/VMC/Ext/Root/Pos", "/VMC/Ext/OK", "/other"])


def _encodable(args):
    return [a for a in args if not (isinstance(a, str) and "\0" in a)]


@FUZZ
@given(st.lists(st.tuples(ADDRESSES, st.lists(ARG, max_size=9)), max_size=6), st.booleans(), st.binary(max_size=64))
def test_vmc_receiver_survives_any_stream(messages, bundle, junk):
    got = []
    rx = vmc.VmcReceiver(got.append, lambda: True)
    packets = [vmc.osc_message(a, *_encodable(args)) for a, args in messages]
    for p in ([vmc.osc_bundle(packets)] if bundle else packets) + [junk]:
        rx.handle_datagram(p, 1)
    for cues in got:
        assert cues.pose.landmarks.shape == (33, 4) and bool(abs(cues.expression).max() <= 1.0)
        assert all(math.isfinite(float(v)) for v in cues.pose.landmarks.ravel())


class _Session:
    """Just what the VTS handlers touch (the real ones are in test_vts.py)."""

    def __init__(self) -> None:
        self.character, self.lock, self.last_cues, self.cues = "nova", threading.Lock(), None, LatestSlot()
        self.conditioner = SimpleNamespace(emotions=("neutral", "happy"), actions=("none", "wave"),
                                           state=lambda: {"triggers": []})

    def control(self, event) -> int:
        return 1

    async def state_after(self, n: int) -> dict:
        return {}


class _Engine:
    def __init__(self) -> None:
        self.sessions = {"default": _Session()}
        self.cfg = SimpleNamespace(size=256)

    def characters(self):
        return ["nova", "leo"]

    async def set_character(self, s, name, source):
        s.character = name


JSONISH = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                    max_size=4), max_leaves=12)


@FUZZ
@given(st.sampled_from(sorted(vts.HANDLERS) + ["Nope", ""]), JSONISH, st.booleans())
def test_vts_handler_answers_anything_with_a_vts_message(kind, data, authenticated):
    server = vts.VtsServer(_Engine(), "default", 0, tokens_path=Path("/nonexistent/vts-tokens.json"))
    if kind == "AuthenticationTokenRequest":
        return  # waits for the streamer; its input checks are in test_vts.py
    msg = {"apiName": "VTubeStudioPublicAPI", "apiVersion": "1.0", "requestID": "x", "messageType": kind, "data": data}
    reply = asyncio.run(server.handle_text(json.dumps(msg), {"authenticated": authenticated}))
    assert reply["apiName"] == "VTubeStudioPublicAPI" and reply["requestID"] == "x"
    if reply["messageType"] == "APIError":
        assert isinstance(reply["data"]["errorID"], int) and "\n" not in reply["data"]["message"]
        assert reply["data"]["errorID"] != vts.INTERNAL, reply  # a client mistake, never our failure
