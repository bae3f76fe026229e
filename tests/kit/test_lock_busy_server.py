"""A Prefect server too busy to grant a run's lock (503, as a SQLite-backed server answers under a
burst of runs, once the client's own retries are spent) is asked again instead of failing the run;
one that stays busy fails it with an error that says so and that nothing was changed. The server is
the real one, behind a relay that answers 503 to the first lock requests and passes the rest on."""
from __future__ import annotations

import http.server
import threading
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

from mq_runbooks.base.errors import UnreachableError
from mq_runbooks.kit import lock

LOCK_REQUEST = "/v2/concurrency_limits/increment-with-lease"
HOP_BY_HOP = {"connection", "content-length", "content-encoding", "transfer-encoding", "keep-alive"}


class BusyRelay(http.server.ThreadingHTTPServer):
    """Relays to the Prefect API; the first `busy` lock requests (every one when busy < 0) get 503."""

    daemon_threads = True

    def __init__(self, upstream: str, busy: int) -> None:
        super().__init__(("127.0.0.1", 0), _Relaying)
        parts = urlsplit(upstream)
        self.upstream = f"{parts.scheme}://{parts.netloc}"
        self.busy = busy
        self.refused = 0
        self.upstream_busy = 0  # lock requests the real server itself answered 503 (busy, on a loaded machine)
        self.client = httpx.Client(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{urlsplit(str(PREFECT_API_URL.value())).path}"


class _Relaying(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: BusyRelay

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        relay = self.server
        if self.path.endswith(LOCK_REQUEST) and relay.busy != 0:
            relay.busy -= 1 if relay.busy > 0 else 0
            relay.refused += 1
            self._answer(503, {"Content-Type": "application/json"}, b'{"exception_message": "Service Unavailable"}')
            return
        headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP | {"host"}}
        answer = relay.client.request(self.command, relay.upstream + self.path, headers=headers, content=body)
        if self.path.endswith(LOCK_REQUEST) and answer.status_code == 503:
            relay.upstream_busy += 1
        self._answer(answer.status_code, dict(answer.headers), answer.content)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _relay

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def relay(request):
    server = BusyRelay(str(PREFECT_API_URL.value()), busy=request.param)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.url, PREFECT_CLIENT_MAX_RETRIES: 0}):
            yield server
    finally:
        server.shutdown()
        server.client.close()


@pytest.mark.parametrize("relay", [3], indirect=True)
def test_a_busy_server_is_asked_again_and_the_lock_is_taken(relay, unique, caplog):
    name = lock.limit_name(unique("busy-target"))
    lock._ensure_limit(name)
    lease = lock._acquire(name, uuid.uuid4(), timeout=5)
    try:
        assert relay.refused == 3, "the three 503 answers were asked through"
        assert caplog.text.count("is busy (503) granting the lock") == 3 + relay.upstream_busy
        with pytest.raises(TimeoutError):  # the slot is really held
            lock._acquire(name, uuid.uuid4(), timeout=1)
    finally:
        lock.release(lease)


@pytest.mark.parametrize("relay", [-1], indirect=True)
def test_a_server_that_stays_busy_fails_the_run_saying_so(relay, unique, monkeypatch):
    monkeypatch.setattr(lock, "BUSY_S", 2.5)
    name = lock.limit_name(unique("busy-target"))
    lock._ensure_limit(name)
    with pytest.raises(UnreachableError, match=r"stayed busy \(503 Service Unavailable\) for 2s .*nothing was changed"):
        lock._acquire(name, uuid.uuid4(), timeout=5)
    assert relay.refused >= 2
