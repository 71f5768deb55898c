"""The studio's character routes against a real service (the default generator, auto, and a real conditioner;
perception is a stand-in: no camera here): upload, rig GET/PUT, art, and the 4xx cases."""
from __future__ import annotations

import json
import uuid

import pytest

from liveavatar.server.config import ServerConfig
from tests.authoring.conftest import DRAWINGS
from tests.authoring.serving import user_data
from tests.server.conftest import ServerThread, free_port, http, wait_until
from tests.server.fakes import fake_perception_stages

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with user_data(tmp_path_factory.mktemp("data")) as chars:
        cfg = ServerConfig(port=free_port(), size=128, demo=False)
        stages = fake_perception_stages(cfg)
        srv = ServerThread(cfg, stages).start()
        srv.chars = chars
        yield srv
        srv.stop()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    out = b""
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    for k, (fname, data) in files.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{fname}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def upload(server, name: str, data: bytes, fname: str = "art.png"):
    body, headers = multipart({"name": name}, {"picture": (fname, data)})
    return http(server.url + "/api/characters", "POST", body, headers=headers)


def one_line_error(status: int, body, expect: int) -> str:
    assert status == expect, body
    assert isinstance(body, dict) and "\n" not in body["error"]
    return body["error"]


def test_upload_a_drawing_then_edit_its_rig(server) -> None:
    status, body = upload(server, "kid", (DRAWINGS / "char2_texture.png").read_bytes())
    assert status == 201, body
    assert body["name"] == "kid" and body["method"] == "paper"
    assert (server.chars / "kid" / "character.json").is_file()
    listed = http(server.url + "/api/characters")[1]["characters"]
    kid = next(c for c in listed if c["name"] == "kid")
    assert kid["editable"] and kid["live"] and not kid["shipped"]
    status, rig = http(server.url + "/api/characters/kid/rig")
    assert status == 200 and rig["format"] == "mesh/1"
    status, png = http(server.url + "/api/characters/kid/art.png")
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    # Live: the generator renders it, and a session switches to it.
    st = http(server.url + "/api/sessions/default/character", "POST", {"name": "kid", "source": "api"})
    assert st[0] == 200, st
    # Move the left elbow and the mouth box; the saved file has them, detected_by becomes "user".
    rig["joints"]["elbow_l"]["x"] += 17.0
    rig["face"]["mouth"][1] += 4.0
    status, res = http(server.url + "/api/characters/kid/rig", "PUT", {"joints": rig["joints"], "face": rig["face"]})
    assert status == 200, res
    saved = json.loads((server.chars / "kid" / "character.json").read_text())
    assert saved["joints"]["elbow_l"]["x"] == pytest.approx(rig["joints"]["elbow_l"]["x"])
    assert saved["face"]["mouth"][1] == pytest.approx(rig["face"]["mouth"][1])
    assert saved["face"]["detected_by"] == "user"
    assert res["reloaded"] is True
    # The generator re-prepared it: its loaded copy has the new elbow.
    gen = server.engine.generator          # auto (the default) hands imported characters to mesh
    gen = getattr(gen, "_subs", {}).get("mesh", gen)
    wait_until(lambda: gen._chars["kid"].manifest.joints["elbow_l"].x == pytest.approx(saved["joints"]["elbow_l"]["x"]),
               10, what="the generator to reload the edited rig")


def test_bad_rig_is_a_400_and_leaves_the_file(server) -> None:
    if not (server.chars / "kid").exists():
        assert upload(server, "kid", (DRAWINGS / "char2_texture.png").read_bytes())[0] == 201
    before = (server.chars / "kid" / "character.json").read_text()
    rig = http(server.url + "/api/characters/kid/rig")[1]
    del rig["joints"]["wrist_l"]
    err = one_line_error(*http(server.url + "/api/characters/kid/rig", "PUT", {"joints": rig["joints"]}), 400)
    assert "wrist_l" in err
    err = one_line_error(*http(server.url + "/api/characters/kid/rig", "PUT", {"canvas_x": 1}), 400)
    assert "unknown rig field" in err
    bad = http(server.url + "/api/characters/kid/rig", "PUT", b"{nope", headers={"Content-Type": "application/json"})
    one_line_error(*bad, 400)
    joints = json.loads(before)["joints"]
    joints["head"]["x"] = "left"
    one_line_error(*http(server.url + "/api/characters/kid/rig", "PUT", {"joints": joints}), 400)
    assert (server.chars / "kid" / "character.json").read_text() == before


@pytest.mark.parametrize(("name", "data", "expect", "words"), [
    ("mia", b"not a picture at all", 400, "not a picture"),
    ("../up", (DRAWINGS / "char2_texture.png").read_bytes(), 400, "not allowed"),
    ("nova", (DRAWINGS / "char2_texture.png").read_bytes(), 400, "shipped"),
    ("mia", b"", 400, "empty"),
])
def test_bad_uploads_are_4xx_one_line(server, name: str, data: bytes, expect: int, words: str) -> None:
    err = one_line_error(*upload(server, name, data), expect)
    assert words in err
    assert not [p for p in server.chars.parent.rglob("*") if p.name.startswith(".")]


def test_upload_size_limit(server, monkeypatch: pytest.MonkeyPatch) -> None:
    from liveavatar.server import characters
    monkeypatch.setattr(characters, "MAX_UPLOAD_BYTES", 100_000)
    err = one_line_error(*upload(server, "big", b"\0" * 300_000), 413)
    assert "too large" in err


def test_rig_routes_refuse_unknown_and_rig2d(server) -> None:
    one_line_error(*http(server.url + "/api/characters/nobody/rig"), 404)
    err = one_line_error(*http(server.url + "/api/characters/nova/rig"), 400)
    assert "rig2d" in err
    one_line_error(*http(server.url + "/api/characters/astro/rig", "PUT", {"joints": {}}), 400)
    status, _ = http(server.url + "/api/characters/..%2fetc/rig")
    assert status == 404
    body, headers = multipart({"name": "x"}, {})
    one_line_error(*http(server.url + "/api/characters", "POST", body, headers=headers), 400)
    one_line_error(*http(server.url + "/api/characters", "POST", {"name": "x"}), 415)


def test_page_has_the_editor(server) -> None:
    status, html = http(server.url + "/studio")
    assert status == 200 and "rig-editor.js" in html
    status, js = http(server.url + "/static/rig-editor.js")
    js = js.decode() if isinstance(js, bytes) else js
    assert status == 200 and "New character" in js


def test_no_figure_is_422_then_placed_by_hand(server, tmp_path) -> None:
    from tests.authoring.test_bad_input import blank_paper
    data = blank_paper(tmp_path / "blank.png").read_bytes()
    err = one_line_error(*upload(server, "blank", data), 422)
    assert "rig editor" in err
    body, headers = multipart({"name": "blank", "manual": "1"}, {"picture": ("blank.png", data)})
    status, res = http(server.url + "/api/characters", "POST", body, headers=headers)
    assert status == 201, res
    assert res["joints_by"] == "manual" and (server.chars / "blank" / "character.json").is_file()


def test_long_text_field_refused(server) -> None:
    body, headers = multipart({"name": "x" * 100_000}, {"picture": ("a.png", b"x")})
    err = one_line_error(*http(server.url + "/api/characters", "POST", body, headers=headers), 400)
    assert "too long" in err
