"""Slack's Socket Mode for tests: the fake Web API (tests/slack_fake.py) plus `apps.connections.open`
(app-level token) and a real WebSocket server on 127.0.0.1 that greets each connection with `hello`,
sends the envelopes a test pushes, and records the acknowledgements it gets back.

    fake = SocketSlackFake.start(token=BOT_TOKEN)     # fake.url for RUNBOOK_SLACK_API_URL
    ... RUNBOOK_SLACK_APP_TOKEN=fake.app_token ...
    fake.wait_connected()
    envelope_id = fake.push("slash_commands", {...form fields...})
    fake.ack(envelope_id)                            # {"envelope_id": ..., "payload": ...?}
    fake.stop()
"""
from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from tests.slack_fake import TOKEN, Call, SlackFake

APP_TOKEN = "xapp-1-A0FAKE-1-fake-app-token"


class SocketSlackFake(SlackFake):
    """SlackFake with Socket Mode; `start()` also starts the WebSocket server."""

    def __init__(self, token: str = TOKEN, app_token: str = APP_TOKEN):
        super().__init__(token)
        self.app_token = app_token
        self._envelope_ids = itertools.count(1)
        self._acks: dict[str, dict[str, Any]] = {}
        self._connections: list[ServerConnection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws_port = 0
        self._stopped: asyncio.Future | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, token: str = TOKEN) -> SocketSlackFake:
        fake = super().start(token)
        ready = threading.Event()
        fake._thread = threading.Thread(target=fake._serve_websocket, args=(ready,), name="slack-socket-fake",
                                        daemon=True)
        fake._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake Socket Mode server did not start")
        return fake

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set_result, None)
            self._thread.join(10)
        super().stop()

    def handle(self, method: str, params: dict[str, Any], token: str | None,
               http_method: str) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        if method != "apps.connections.open":
            return super().handle(method, params, token, http_method)
        with self._lock:
            self._state.calls.append(Call(method, {}, 200, http_method))
        if token != self.app_token:  # Slack refuses bot tokens here too
            return 200, {"ok": False, "error": "invalid_auth" if token else "not_authed"}, {}
        return 200, {"ok": True, "url": f"ws://127.0.0.1:{self._ws_port}/link?ticket=fake"}, {}

    # -- steering and observing ------------------------------------------------------------------

    def wait_connected(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self._connections:
            if time.monotonic() > deadline:
                raise AssertionError("nobody connected to the fake Socket Mode server")
            time.sleep(0.1)

    def push(self, envelope_type: str, payload: Any, accepts_response_payload: bool = False) -> str:
        """Send an envelope to the connected client; returns its envelope_id."""
        envelope_id = f"env-{next(self._envelope_ids)}"
        self.push_raw({"envelope_id": envelope_id, "type": envelope_type, "payload": payload,
                       "accepts_response_payload": accepts_response_payload})
        return envelope_id

    def push_raw(self, message: dict[str, Any] | str) -> None:
        assert self._loop is not None and self._connections, "no Socket Mode client is connected"
        text = message if isinstance(message, str) else json.dumps(message)
        connection = self._connections[-1]
        asyncio.run_coroutine_threadsafe(connection.send(text), self._loop).result(5)

    def ack(self, envelope_id: str, timeout: float = 10) -> dict[str, Any]:
        """The acknowledgement of `envelope_id`, waiting up to `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if envelope_id in self._acks:
                    return self._acks[envelope_id]
            time.sleep(0.05)
        raise AssertionError(f"envelope {envelope_id} was not acknowledged within {timeout} s")

    # -- the WebSocket server -------------------------------------------------------------------

    def _serve_websocket(self, ready: threading.Event) -> None:
        async def main() -> None:
            self._loop, self._stopped = asyncio.get_running_loop(), asyncio.get_running_loop().create_future()
            async with serve(self._connection, "127.0.0.1", 0) as server:
                self._ws_port = next(iter(server.sockets)).getsockname()[1]
                ready.set()
                await self._stopped

        asyncio.run(main())

    async def _connection(self, connection: ServerConnection) -> None:
        await connection.send(json.dumps({"type": "hello", "num_connections": len(self._connections) + 1,
                                          "debug_info": {"host": "fake", "approximate_connection_time": 18060},
                                          "connection_info": {"app_id": "A0FAKE"}}))
        self._connections.append(connection)
        try:
            async for text in connection:
                try:
                    ack = json.loads(text)
                except ValueError:
                    continue
                if isinstance(ack, dict) and isinstance(ack.get("envelope_id"), str):
                    with self._lock:
                        self._acks[ack["envelope_id"]] = ack
        except Exception:  # noqa: BLE001 (a client going away is not the fake's problem)
            pass
        finally:
            self._connections.remove(connection)
