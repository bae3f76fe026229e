"""A fake Slack Web API for tests: a real HTTP server on 127.0.0.1 that answers the methods the
engine calls as Slack does (bearer token, `ok`/`error` answers, Block Kit limits) and records
every call, so tests run the real `slack_sdk` client and assert what it sent.

    fake = SlackFake.start()                       # fake.url == "http://127.0.0.1:PORT/api/"
    fake.add_user("U1", "carol", real_name="Carol C", display_name="carol")
    fake.add_usergroup("S1", "kafka-oncall", ["U1"])
    fake.fail_next(2, 429, retry_after=1)          # the next two calls answer 429 + Retry-After: 1
    fake.answer_without("chat.getPermalink", "permalink")  # ok answers that lack a documented field
    ... WebClient(token=fake.token, base_url=fake.url) ...
    fake.calls("chat.postMessage")                 # [Call(method, params, status), ...]
    fake.stop()

`response_url()` gives a URL that records what is posted to it (as method "response_url"), like
the `response_url` Slack puts in slash commands and interactions.
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.slack_blocks_rules import block_errors, view_errors
from tests.slack_payloads import signed_request_headers  # noqa: F401 (part of this module's API)

TOKEN = "xoxb-fake-bot-token"
BLOCKS_MAX_CHARS = 12_000  # where the fake says msg_blocks_too_long (real Slack: near 13,000)
TEXT_MAX_CHARS = 40_000
PERMALINK_BASE = "https://fake-workspace.slack.com"  # what chat.getPermalink answers under


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int = 200  # the HTTP status the fake answered
    http_method: str = "POST"


@dataclass
class _State:
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    usergroups: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    failures: list[tuple[int, int | None]] = field(default_factory=list)
    dropped: dict[str, set[str]] = field(default_factory=dict)  # method -> keys left out of its answers


class SlackFake:
    """The fake Slack; `start()` it, `stop()` it. Thread-safe."""

    def __init__(self, token: str = TOKEN):
        self.token = token
        self._state = _State()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None

    @classmethod
    def start(cls, token: str = TOKEN) -> SlackFake:
        fake = cls(token)
        handler = type("Handler", (_Handler,), {"fake": fake})
        fake._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        fake._server.daemon_threads = True
        threading.Thread(target=fake._server.serve_forever, name="slack-fake", daemon=True).start()
        return fake

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        """The Web API base URL, for `WebClient(base_url=...)` and RUNBOOK_SLACK_API_URL."""
        return f"{self.base_url}/api/"

    # -- seeding and steering ------------------------------------------------------------------

    def add_user(self, user_id: str, name: str, *, real_name: str = "", display_name: str = "") -> None:
        with self._lock:
            self._state.users[user_id] = {
                "id": user_id, "name": name, "real_name": real_name or name, "deleted": False, "is_bot": False,
                "profile": {"display_name": display_name, "real_name": real_name or name},
            }

    def add_usergroup(self, usergroup_id: str, handle: str, user_ids: list[str], name: str = "") -> None:
        with self._lock:
            self._state.usergroups[usergroup_id] = {"id": usergroup_id, "handle": handle,
                                                    "name": name or handle, "users": list(user_ids)}

    def fail_next(self, n: int, status: int, retry_after: int | None = None) -> None:
        """The next `n` Web API calls answer HTTP `status` (429 carries `Retry-After`, default 1)."""
        if status == 429 and retry_after is None:
            retry_after = 1
        with self._lock:
            self._state.failures = [(status, retry_after)] * n

    def answer_without(self, method: str, *keys: str) -> None:
        """From now on (until clear()), `method`'s answers leave out `keys`: an odd answer, ok but
        without what Slack documents (chat.getPermalink without `permalink`)."""
        with self._lock:
            self._state.dropped[method] = set(keys)

    def response_url(self, key: str | None = None) -> str:
        return f"{self.base_url}/response/{key or next(self._ids)}"

    # -- what happened ----------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        """Every call so far (or those of one method), failed ones included, oldest first."""
        with self._lock:
            return [c for c in self._state.calls if method is None or c.method == method]

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        """A posted message as it is now (after any chat.update)."""
        with self._lock:
            return self._state.messages[(channel, ts)]

    def replies(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """The messages posted in the thread of message `ts`, oldest first."""
        with self._lock:
            return [m for (c, _), m in self._state.messages.items() if c == channel and m.get("thread_ts") == ts]

    def clear(self) -> None:
        with self._lock:
            self._state.calls.clear()
            self._state.failures.clear()
            self._state.dropped.clear()

    # -- the API ----------------------------------------------------------------------------------

    def handle(self, method: str, params: dict[str, Any], token: str | None,
               http_method: str) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        """(HTTP status, JSON answer or text, headers) for one Web API call; records it."""
        with self._lock:
            failure = self._state.failures.pop(0) if self._state.failures else None
            call = Call(method, params, failure[0] if failure else 200, http_method)
            self._state.calls.append(call)
            if failure:
                status, retry_after = failure
                if status == 429:
                    return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}
                return status, "<html><body>Slack is having trouble</body></html>", {}
            if not token:
                return 200, {"ok": False, "error": "not_authed"}, {}
            if token != self.token:
                return 200, {"ok": False, "error": "invalid_auth"}, {}
            answer = getattr(self, "_" + method.replace(".", "_"), None)
            if answer is None:
                return 404, {"ok": False, "error": "unknown_method", "req_method": method}, {}
            answered = answer(params)
            dropped = self._state.dropped.get(method, set())
            return 200, {key: value for key, value in answered.items() if key not in dropped}, {}

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": "https://fake.slack.com/", "team": "Fake", "user": "runbook",
                "team_id": "T0FAKE", "user_id": "U0BOT", "bot_id": "B0BOT"}

    def _chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        refused = _message_errors(params)
        if refused:
            return refused
        ts = f"{int(time.time())}.{next(self._ids):06d}"
        message = {"type": "message", "user": "U0BOT", "bot_id": "B0BOT", "ts": ts,
                   "text": params.get("text", ""), "blocks": params.get("blocks", [])}
        if params.get("thread_ts"):
            message["thread_ts"] = params["thread_ts"]
        self._state.messages[(params["channel"], ts)] = message
        return {"ok": True, "channel": params["channel"], "ts": ts, "message": message}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        refused = _message_errors(params)
        if refused:
            return refused
        message = self._state.messages.get((params["channel"], str(params.get("ts", ""))))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.update(text=params.get("text", ""), blocks=params.get("blocks", []), edited={"user": "U0BOT"})
        return {"ok": True, "channel": params["channel"], "ts": message["ts"], "text": message["text"],
                "message": message}

    def _chat_getPermalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(params.get("channel", "")), str(params.get("message_ts", ""))
        if (channel, ts) not in self._state.messages:
            return {"ok": False, "error": "message_not_found"}
        return {"ok": True, "channel": channel, "permalink": f"{PERMALINK_BASE}/archives/{channel}/p{ts.replace('.', '')}"}

    def _chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("user"):
            return {"ok": False, "error": "user_not_found"}
        return _message_errors(params) or {"ok": True, "message_ts": f"{int(time.time())}.{next(self._ids):06d}"}

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("trigger_id"):
            return {"ok": False, "error": "invalid_arguments",
                    "response_metadata": {"messages": ["[ERROR] missing required field: trigger_id"]}}
        view = params.get("view")
        if isinstance(view, str):
            try:
                view = params["view"] = json.loads(view)
            except ValueError:
                return {"ok": False, "error": "invalid_arguments"}
        errors = view_errors(view)
        if errors:
            return {"ok": False, "error": "invalid_arguments", "response_metadata": {"messages": errors}}
        view = dict(params["view"], id=f"V{next(self._ids):08d}", state={"values": {}})
        return {"ok": True, "view": view}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self._state.users.get(str(params.get("user", "")))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group = self._state.usergroups.get(str(params.get("usergroup", "")))
        return {"ok": True, "users": list(group["users"])} if group else {"ok": False, "error": "no_such_subteam"}

    def _usergroups_list(self, params: dict[str, Any]) -> dict[str, Any]:
        with_users = str(params.get("include_users", "")).lower() in ("1", "true")
        groups = [{key: value for key, value in group.items() if key != "users" or with_users}
                  | {"user_count": len(group["users"])} for group in self._state.usergroups.values()]
        return {"ok": True, "usergroups": groups}

    def record_response(self, key: str, body: dict[str, Any] | str) -> None:
        with self._lock:
            self._state.calls.append(Call("response_url", {"key": key, "body": body}))


def _message_errors(params: dict[str, Any]) -> dict[str, Any] | None:
    """Slack's answer refusing a message, or None when it would take it."""
    if not params.get("channel"):
        return {"ok": False, "error": "channel_not_found"}
    blocks = params.get("blocks")
    if not params.get("text") and not blocks:
        return {"ok": False, "error": "no_text"}
    if len(str(params.get("text", ""))) > TEXT_MAX_CHARS:
        return {"ok": False, "error": "msg_too_long"}
    if blocks:
        if isinstance(blocks, str):
            try:
                blocks = params["blocks"] = json.loads(blocks)
            except ValueError:
                return {"ok": False, "error": "invalid_blocks_format"}
        if len(json.dumps(blocks, separators=(",", ":"), ensure_ascii=False)) > BLOCKS_MAX_CHARS:
            return {"ok": False, "error": "msg_blocks_too_long"}
        errors = block_errors(blocks)
        if errors:
            return {"ok": False, "error": "invalid_blocks", "errors": errors,
                    "response_metadata": {"messages": errors}}
    return None


class _Handler(BaseHTTPRequestHandler):
    fake: SlackFake
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _serve(self, http_method: str) -> None:
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        params: dict[str, Any] = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            params.update(_body_params(self.headers.get("Content-Type", ""), body))
        except ValueError:
            self._answer(200, {"ok": False, "error": "invalid_json"}, {})
            return
        if url.path.startswith("/response/"):
            self.fake.record_response(url.path.rsplit("/", 1)[1], params or body.decode("utf-8", "replace"))
            self._answer(200, "ok", {})
        elif url.path.startswith("/api/"):
            authorization = self.headers.get("Authorization", "")
            token = authorization[len("Bearer "):] if authorization.startswith("Bearer ") else params.pop("token", None)
            self._answer(*self.fake.handle(url.path[len("/api/"):], params, token, http_method))
        else:
            self._answer(404, "not found", {})

    def _answer(self, status: int, answer: dict[str, Any] | str, headers: dict[str, str]) -> None:
        is_json = isinstance(answer, dict)
        data = (json.dumps(answer) if is_json else answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8" if is_json else "text/html")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep test output quiet


def _body_params(content_type: str, body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    if content_type.startswith("application/json"):
        decoded = json.loads(body)
        if not isinstance(decoded, dict):
            raise ValueError("a JSON body must be an object")
        return decoded
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
