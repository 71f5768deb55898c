"""A thin, testable layer over obsws-python: connection errors and request failures become
one-line UserErrors that say what to do, and every request goes through `call()` so tests can
record the exact sequence with a fake."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from liveavatar.errors import UserError

#: obs-websocket 5 ships inside OBS from 28.0 on; older OBS speaks protocol 4, which we do not.
MIN_OBS = (28, 0)

# obs-websocket request status codes we act on (protocol.md, RequestStatus).
RESOURCE_NOT_FOUND = 600
REQUEST_UNKNOWN = 204


class Sender(Protocol):
    """What `ObsClient` needs from obsws-python's ReqClient (and what test fakes provide)."""
    def send(self, param: str, data: dict | None = None, raw: bool = False) -> Any: ...


class ObsRequestError(UserError):
    """OBS refused a request. `code` is obs-websocket's RequestStatus code."""

    def __init__(self, request: str, code: int, comment: str) -> None:
        self.request, self.code, self.comment = request, code, comment
        super().__init__(f"OBS refused {request} (code {code}): {comment or 'no reason given'}")


@dataclass(frozen=True)
class ObsAddress:
    host: str = "localhost"
    port: int = 4455
    password: str = ""

    def __str__(self) -> str:
        return f"ws://{self.host}:{self.port}"


def connect(addr: ObsAddress, timeout: float = 5.0) -> ObsClient:
    """Connect and identify; every failure is a one-line UserError naming the address."""
    import obsws_python as obsws
    from obsws_python.error import OBSSDKError
    from websocket import WebSocketException

    # obsws-python logs each failure with a traceback before raising; we report it ourselves.
    logging.getLogger("obsws_python").setLevel(logging.CRITICAL)
    where = f"OBS websocket at {addr}"
    try:
        req = obsws.ReqClient(host=addr.host, port=addr.port, password=addr.password, timeout=timeout)
    except OBSSDKError as e:
        if "no password" in str(e):
            raise UserError(f"{where} requires a password: pass --password or set "
                            "OBS_WEBSOCKET_PASSWORD (OBS: Tools > WebSocket Server Settings > "
                            "Show Connect Info)") from None
        raise UserError(f"{where} rejected the password: check --password / "
                        "OBS_WEBSOCKET_PASSWORD against OBS's Tools > WebSocket Server Settings") from None
    except (OSError, WebSocketException) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise UserError(f"cannot reach {where} ({reason}): is OBS running with Tools > WebSocket "
                        "Server Settings > Enable WebSocket server on?") from None
    return ObsClient(req)


class ObsClient:
    """Requests by name with plain dict data in and out (obsws-python's raw mode)."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def call(self, request: str, data: dict | None = None) -> dict:
        from obsws_python.error import OBSSDKRequestError, OBSSDKTimeoutError
        try:
            return self._sender.send(request, data, raw=True) or {}
        except OBSSDKRequestError as e:
            comment = str(e).split("With message: ", 1)[-1] if "With message" in str(e) else ""
            raise ObsRequestError(request, e.code, comment) from None
        except OBSSDKTimeoutError:
            raise UserError(f"OBS did not answer {request} in time") from None

    def close(self) -> None:
        disconnect = getattr(self._sender, "disconnect", None)
        if disconnect:
            try:
                disconnect()
            except Exception:
                pass

    def __enter__(self) -> ObsClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def parse_version(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)
