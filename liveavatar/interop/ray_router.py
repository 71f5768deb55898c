"""The Ray Serve request router of the generator workers (runs in the service's process, inside
Ray Serve's handle): sticky sessions, placed by load."""
from __future__ import annotations

import time
from typing import Any

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from liveavatar.interop.ray_workers import FrameRequest

#: A session not seen for this long no longer counts as load (it ended or moved).
SESSION_TTL_S = 5.0


class SessionRouter(RequestRouter):
    """A session stays on its replica while that replica lives (and did not fail it); a new or
    moved session goes to the replica with the fewest live sessions. Calls that carry no session
    (prepare, idle clips, describe) go to the least loaded replica too."""

    def initialize_state(self, **kwargs: Any) -> None:
        self.placed: dict[str, tuple[str, float]] = {}   # session -> (replica id, last seen)

    def _load(self, now: float) -> dict[str, int]:
        load: dict[str, int] = {}
        for sid, (rid, seen) in list(self.placed.items()):
            if now - seen > SESSION_TTL_S:
                del self.placed[sid]
            else:
                load[rid] = load.get(rid, 0) + 1
        return load

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        now = time.monotonic()
        args = pending_request.args if pending_request is not None else []
        req = args[0] if args and isinstance(args[0], FrameRequest) else None
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        move_from = req.move_from if req is not None else ""
        if req is not None:
            placed = self.placed.get(req.session)
            if placed is not None and placed[0] in by_id and placed[0] != move_from:
                self.placed[req.session] = (placed[0], now)
                return [[by_id[placed[0]]]]
            self.placed.pop(req.session, None)
        load = self._load(now)
        others = [r for r in candidate_replicas if r.replica_id.unique_id != move_from] or candidate_replicas
        ranked = sorted(others, key=lambda r: (load.get(r.replica_id.unique_id, 0), r.replica_id.unique_id))
        if req is not None:
            self.placed[req.session] = (ranked[0].replica_id.unique_id, now)
        # the rest are fallbacks Serve tries in order when the first rejects (its queue is full)
        return [ranked[:1], ranked[1:]] if len(ranked) > 1 else [ranked]
