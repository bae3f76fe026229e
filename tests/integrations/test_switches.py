"""Endpoint switches against real files and real local HTTP servers: a config endpoint that records
calls, and a fake Consul KV that answers like Consul (GET: JSON list with base64 Value; PUT: true)."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from mq_runbooks.base.clusters import parse_clusters
from mq_runbooks.base.errors import BrokerError, ConfigError, NotFoundError, UnreachableError
from mq_runbooks.integrations.switches import switch_named


def clusters_with(switches: str, environ: dict[str, str] | None = None):
    return parse_clusters("switches:\n" + switches, "test.yaml", environ or {})


class ConsulKV(BaseHTTPRequestHandler):
    """Answers /v1/kv/KEY like Consul: GET -> [{"Key", "Value" (base64), "ModifyIndex"}] or 404;
    PUT/DELETE honour ?cas=INDEX and answer true or false."""
    store: dict[str, tuple[bytes, int]] = {}
    index = 0
    tokens: list[str | None] = []
    interloper: bytes | None = None  # written by "someone else" just before the next PUT lands

    def _key(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        return parts.path.removeprefix("/v1/kv/"), parse_qs(parts.query)

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        key, _ = self._key()
        self.tokens.append(self.headers.get("X-Consul-Token"))
        if key not in self.store:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        value, index = self.store[key]
        self._answer(200, [{"Key": key, "Value": base64.b64encode(value).decode(), "Flags": 0,
                            "CreateIndex": index, "ModifyIndex": index, "LockIndex": 0}])

    def _cas_ok(self, key: str, query: dict[str, list[str]]) -> bool:
        if "cas" not in query:
            return True
        return int(query["cas"][0]) == (self.store[key][1] if key in self.store else 0)

    def do_PUT(self):  # noqa: N802
        key, query = self._key()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if ConsulKV.interloper is not None:
            ConsulKV.index += 1
            self.store[key], ConsulKV.interloper = (ConsulKV.interloper, ConsulKV.index), None
        if not self._cas_ok(key, query):
            return self._answer(200, False)
        ConsulKV.index += 1
        self.store[key] = (body, ConsulKV.index)
        self._answer(200, True)

    def do_DELETE(self):  # noqa: N802
        key, query = self._key()
        if not self._cas_ok(key, query):
            return self._answer(200, False)
        self.store.pop(key, None)
        self._answer(200, True)

    def log_message(self, *args):
        pass


class ConfigService(BaseHTTPRequestHandler):
    """A config endpoint: PUT stores the JSON body, GET returns it; every call is recorded."""
    calls: list[tuple[str, str, str, str | None]] = []
    document: bytes | None = None

    def do_PUT(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.calls.append(("PUT", self.path, body.decode(), self.headers.get("Authorization")))
        if self.path.endswith("/broken"):
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        ConfigService.document = body
        self.send_response(204)
        self.end_headers()

    def do_GET(self):  # noqa: N802
        self.calls.append(("GET", self.path, "", self.headers.get("Authorization")))
        body = ConfigService.document or b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def consul():
    ConsulKV.store, ConsulKV.index, ConsulKV.tokens, ConsulKV.interloper = {}, 0, [], None
    server, url = serve(ConsulKV)
    yield url
    server.shutdown()


@pytest.fixture
def config_service():
    ConfigService.calls, ConfigService.document = [], None
    server, url = serve(ConfigService)
    yield url
    server.shutdown()


def test_file_switch_json_sets_a_nested_key_keeps_the_rest_and_restores(tmp_path):
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"app": "billing", "kafka": {"bootstrap_servers": "p:1", "acks": "all"}}))
    switch = switch_named(clusters_with(f"""\
  kafka-clients: {{kind: file, path: {path}, key: kafka.bootstrap_servers, values: {{standby: "s:2"}}}}
"""), "kafka-clients")
    assert switch.current() == "p:1"
    old = switch.switch(switch.value_for("standby"))
    assert old == "p:1" and switch.current() == "s:2"
    assert json.loads(path.read_text()) == {"app": "billing", "kafka": {"bootstrap_servers": "s:2", "acks": "all"}}
    switch.restore(old)
    assert json.loads(path.read_text())["kafka"]["bootstrap_servers"] == "p:1"
    assert [p.name for p in tmp_path.iterdir()] == ["clients.json"], "no temporary file left behind"
    assert switch.describe() == f"file {path} key kafka.bootstrap_servers"


def test_file_switch_yaml_created_when_missing_and_restore_of_none_removes_the_key(tmp_path):
    path = tmp_path / "conf" / "clients.yml"
    switch = switch_named(clusters_with(f"  c: {{kind: file, path: {path}, key: a.b.c}}\n"), "c")
    assert switch.current() is None
    assert switch.switch("x:1") is None
    assert yaml.safe_load(path.read_text()) == {"a": {"b": {"c": "x:1"}}}
    switch.restore(None)
    assert yaml.safe_load(path.read_text()) == {"a": {"b": {}}}


def test_file_switch_refuses_a_file_it_cannot_read_as_configured(tmp_path):
    path = tmp_path / "clients.json"
    path.write_text("{not json")
    switch = switch_named(clusters_with(f"  c: {{kind: file, path: {path}, key: k}}\n"), "c")
    with pytest.raises(BrokerError, match="is not valid JSON"):
        switch.switch("x")
    path.write_text(json.dumps({"k": ["a", "b"], "n": 1}))
    assert switch.current() == '["a", "b"]'
    nested = switch_named(clusters_with(f"  c: {{kind: file, path: {path}, key: n.deeper}}\n"), "c")
    with pytest.raises(BrokerError, match="n in .* is not a mapping"):
        nested.switch("x")
    assert json.loads(path.read_text()) == {"k": ["a", "b"], "n": 1}, "unchanged after a refused write"


def test_http_switch_renders_the_body_sends_env_headers_and_reads_back(config_service):
    clusters = clusters_with(f"""\
  orders:
    kind: http
    method: PUT
    url: {config_service}/v1/endpoints/orders
    body: '{{"endpoint": "{{{{ value }}}}", "switch": "{{{{ name }}}}"}}'
    headers: {{Authorization: "Bearer ${{CONFIG_TOKEN}}"}}
    current_url: {config_service}/v1/endpoints/orders
    current_key: endpoint
""", {"CONFIG_TOKEN": "t0ken"})
    assert "t0ken" not in repr(clusters.switches["orders"])
    switch = switch_named(clusters, "orders")
    assert switch.current() is None, "404: no value yet"
    assert switch.switch("127.0.0.1:29092") is None
    assert switch.switch("127.0.0.1:19092") == "127.0.0.1:29092"
    puts = [call for call in ConfigService.calls if call[0] == "PUT"]
    assert puts[-1] == ("PUT", "/v1/endpoints/orders", '{"endpoint": "127.0.0.1:19092", "switch": "orders"}',
                        "Bearer t0ken")
    assert all(call[3] == "Bearer t0ken" for call in ConfigService.calls)


def test_http_switch_without_a_read_url_remembers_what_it_sent(config_service, tmp_path):
    state = tmp_path / "state" / "orders.json"
    text = f"""\
  orders: {{kind: http, url: "{config_service}/v1/x", initial: "p:1", state_file: {state}}}
"""
    switch = switch_named(clusters_with(text), "orders")
    assert switch.current() == "p:1"
    assert switch.switch("s:2") == "p:1"
    assert ConfigService.calls[-1][:3] == ("PUT", "/v1/x", "s:2")
    assert switch_named(clusters_with(text), "orders").current() == "s:2", "another process reads the state file"
    with pytest.raises(BrokerError, match="cannot remove its value"):
        switch.restore(None)


def test_http_switch_failures_are_broker_errors(config_service):
    broken = switch_named(clusters_with(f"  o: {{kind: http, url: '{config_service}/v1/broken'}}\n"), "o")
    with pytest.raises(BrokerError, match="answered 503"):
        broken.switch("x")
    assert broken.current() is None, "a refused write is not remembered"
    dead = switch_named(clusters_with("  o: {kind: http, url: 'http://127.0.0.1:9/x', timeout_s: 2}\n"), "o")
    with pytest.raises(UnreachableError, match="PUT http://127.0.0.1:9/x failed"):
        dead.switch("x")


def test_consul_switch_reads_base64_writes_with_cas_and_restores(consul):
    clusters = clusters_with(f"""\
  billing: {{kind: consul, url: "{consul}", key: config/billing/kafka, token: "${{CONSUL_TOKEN}}",
             values: {{primary: "p:1", standby: "s:2"}}}}
""", {"CONSUL_TOKEN": "c0nsul"})
    switch = switch_named(clusters, "billing")
    assert switch.current() is None
    assert switch.switch(switch.value_for("primary")) is None
    assert ConsulKV.store["config/billing/kafka"][0] == b"p:1"
    old = switch.switch(switch.value_for("standby"))
    assert (old, switch.current()) == ("p:1", "s:2")
    switch.restore(old)
    assert switch.current() == "p:1"
    switch.restore(None)
    assert "config/billing/kafka" not in ConsulKV.store
    assert set(ConsulKV.tokens) == {"c0nsul"}


def test_consul_switch_never_overwrites_a_concurrent_change(consul):
    switch = switch_named(clusters_with(f"  b: {{kind: consul, url: '{consul}', key: k}}\n"), "b")
    switch.switch("mine")
    ConsulKV.interloper = b"someone-else"
    with pytest.raises(BrokerError, match="check-and-set index 1 is stale"):
        switch.switch("new")
    assert ConsulKV.store["k"][0] == b"someone-else"


def test_unknown_switch_and_missing_value_name_what_exists(tmp_path):
    clusters = clusters_with(f"  a: {{kind: file, path: {tmp_path}/a.json, key: k, values: {{primary: p}}}}\n")
    with pytest.raises(NotFoundError, match=r"no endpoint switch named 'b' in test.yaml \(defined: a\)"):
        switch_named(clusters, "b")
    with pytest.raises(ConfigError, match=r"no value for cluster 'standby' \(values are set for: primary\)"):
        switch_named(clusters, "a").value_for("standby")


def test_a_relative_file_path_is_relative_to_the_clusters_file(tmp_path):
    clusters = parse_clusters("switches:\n  c: {kind: file, path: state/c.json, key: k}\n",
                              str(tmp_path / "clusters.yaml"), {})
    switch_named(clusters, "c").switch("v")
    assert json.loads((tmp_path / "state" / "c.json").read_text()) == {"k": "v"}
