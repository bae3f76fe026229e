"""The `switches:` section of clusters.yaml: kinds, defaults, secrets and errors that name the field."""
from pathlib import Path

import pytest

from mq_runbooks.base.clusters import load_clusters, parse_clusters
from mq_runbooks.base.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_the_default_file_declares_the_local_kafka_clients_switch():
    clusters = load_clusters(REPO / "clusters.yaml", environ={})
    switch = clusters.switches["kafka-clients"]
    assert switch.kind == "file" and switch.key == "kafka.bootstrap_servers"
    assert switch.path.endswith(".stack/kafka-clients.json")
    assert switch.values == {"primary": "127.0.0.1:19092", "standby": "127.0.0.1:29092"}
    moved = load_clusters(REPO / "clusters.yaml", environ={"RUNBOOK_KAFKA_CLIENTS_FILE": "/tmp/c.json",
                                                            "STACK_KAFKA_STANDBY_PORT": "39092"})
    assert moved.switches["kafka-clients"].path == "/tmp/c.json"
    assert moved.switches["kafka-clients"].values["standby"] == "127.0.0.1:39092"


def test_a_file_without_switches_has_none():
    assert parse_clusters("kafka:\n  a: {bootstrap_servers: 'x:1'}\n", "c.yaml", {}).switches == {}


def test_each_kind_with_its_defaults_and_secrets_hidden():
    clusters = parse_clusters("""
switches:
  f: {kind: file, path: /etc/app/clients.conf, format: yaml, key: kafka.servers}
  h: {kind: http, url: "https://cfg/x", headers: {Authorization: "Bearer ${TOKEN}"}}
  c: {kind: consul, key: config/kafka, token: "${TOKEN}", url: "http://consul:8500/"}
""", "c.yaml", {"TOKEN": "hunter2"})
    http, consul = clusters.switches["h"], clusters.switches["c"]
    assert (http.method, http.body, http.current_url) == ("PUT", "{{ value }}", None)
    assert consul.url == "http://consul:8500" and consul.token.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(clusters) and "hunter2" not in str(clusters.model_dump())
    assert clusters.switches["f"].format == "yaml"


@pytest.mark.parametrize("text, expected", [
    ("s: {kind: dns}", "switches.s: Input tag 'dns' found using 'kind' does not match"),
    ("s: {kind: file, path: /x.json}", "switches.s.file.key: required, but missing"),
    ("s: {kind: file, path: /x.conf, key: k}", "cannot tell the format of '/x.conf'"),
    ("s: {kind: file, path: /x.json, key: 'a..b'}", "'a..b' is not a dotted key path"),
    ("s: {kind: http, url: 'ftp://x'}", "switches.s.http.url: must start with http://"),
    ("s: {kind: http, url: 'http://x', method: GET}", "switches.s.http.method: got 'GET', allowed:"),
    ("s: {kind: http, url: 'http://x', body: '{{ value'}", "switches.s.http.body: not a valid Jinja2 template"),
    ("s: {kind: consul, key: k, colour: red}", "switches.s.consul.colour: unknown key"),
    ("s: {kind: consul, key: k, token: '${NOPE}'}", "switches.s.token refers to ${NOPE}"),
])
def test_mistakes_name_the_field_and_what_is_allowed(text, expected):
    with pytest.raises(ConfigError) as error:
        parse_clusters("switches:\n  " + text + "\n", "c.yaml", {})
    assert expected in str(error.value)
