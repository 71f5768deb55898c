"""tests/server: the harness lives in tests/server/harness.py (import it from there). These
names stay importable from here for tests written before the harness module."""
from tests.server.harness import ServerThread, free_port, http, running_server, wait_until

__all__ = ["ServerThread", "free_port", "http", "running_server", "wait_until"]
