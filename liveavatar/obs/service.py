"""The few calls `liveavatar obs` makes to a running `liveavatar serve` (control API contract:
feeds, health, state). Standard-library HTTP: these are one-off calls from a CLI."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

from liveavatar.errors import UserError


class ServiceUnreachable(Exception):
    """The service did not answer (not running, wrong URL). Callers decide if that is fatal."""


@dataclass(frozen=True)
class Service:
    url: str = "http://127.0.0.1:8080"
    token: str | None = None
    timeout: float = 5.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UserError(f"service URL {self.url!r} must look like http://HOST:PORT")
        object.__setattr__(self, "url", self.url.rstrip("/"))

    def session_path(self, session: str, tail: str) -> str:
        return f"/api/sessions/{quote(session, safe='')}/{tail}"

    def viewer_url(self, session: str, viewer_token: str | None, voice: bool = False) -> str:
        """The viewer page for an OBS browser source. Without `voice` it plays the picture
        alone: OBS already captures the microphone, and a second copy of the voice would echo."""
        query = {"session": session, "transparent": "1"}
        if not voice:
            query["audio"] = "0"
        if viewer_token:
            query["token"] = viewer_token
        return f"{self.url}/viewer?{urlencode(query)}"

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = _error_text(e.read())
            if e.code in (401, 403):
                raise UserError(f"{self.url} refused {method} {path} ({e.code}): pass the "
                                "service's token with --token or LIVEAVATAR_TOKEN") from None
            raise UserError(f"{self.url}: {method} {path} failed ({e.code}): {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ServiceUnreachable(f"LiveAvatar service at {self.url} did not answer ({reason})") from None
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            return {}

    def start_feed(self, session: str, url: str) -> dict:
        return self.request("POST", self.session_path(session, "feeds"), {"kind": "mpegts", "url": url})

    def stop_feed(self, session: str) -> dict:
        return self.request("DELETE", self.session_path(session, "feeds"))

    def health(self) -> dict:
        # /health answers 503 while warming up, with the same JSON body; that is still an answer.
        try:
            return self.request("GET", "/health")
        except UserError as e:
            if "(503)" in str(e):
                return {"status": "warming up"}
            raise


    def wait_ready(self, timeout: float, say: Callable[[str], None] = lambda line: None) -> None:
        """Wait (at most `timeout` s) until /health answers 200: the service warmed up and its
        default session exists. Tells `say` once what it waits for. UserError when the service
        is still not ready (saying to retry) or its warm-up failed; ServiceUnreachable when it
        does not answer at all."""
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                self.request("GET", "/health")
                return
            except UserError as e:
                if "(503)" not in str(e):
                    raise
                status = self._health_status()
            if status == "error":
                raise UserError(f"the LiveAvatar service at {self.url} failed to warm up: see its log "
                                "(or GET /health), fix it and start it again")
            if time.monotonic() >= deadline:
                raise UserError(f"the LiveAvatar service at {self.url} is still warming up after {timeout:.0f} s; "
                                "run the command again once GET /health answers 200")
            if not told:
                say(f"waiting up to {timeout:.0f} s for the LiveAvatar service at {self.url} to finish "
                    "warming up (its generator and default session) ...")
                told = True
            time.sleep(0.5)

    def _health_status(self) -> str:
        """The `status` field of a 503 /health answer (warming_up or error)."""
        req = urllib.request.Request(self.url + "/health")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return str(json.loads(resp.read()).get("status", "ok"))
        except urllib.error.HTTPError as e:
            try:
                return str(json.loads(e.read()).get("status", "warming_up"))
            except (ValueError, AttributeError):
                return "warming_up"
        except (urllib.error.URLError, OSError):
            return "warming_up"


def _error_text(raw: bytes) -> str:
    try:
        body = json.loads(raw)
        return str(body.get("error") or body.get("detail") or body)
    except (ValueError, AttributeError):
        return raw.decode(errors="replace")[:200]
