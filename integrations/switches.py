"""Endpoint switches: the one place clients learn which cluster to talk to, and how a runbook moves it.

Declared in clusters.yaml under `switches:` (models in mq_runbooks/base/clusters.py), one of three kinds:

    switches:
      kafka-clients:                  # a JSON or YAML file that clients or a config agent read
        kind: file
        path: /etc/app/kafka.json     # relative paths are relative to clusters.yaml's directory
        key: kafka.bootstrap_servers  # dotted path; intermediate mappings are created
        values: {primary: "127.0.0.1:19092", standby: "127.0.0.1:29092"}
      orders-clients:                 # an HTTP call (body: Jinja2 over `value` and `name`)
        kind: http
        method: PUT
        url: https://config.example/v1/endpoints/orders
        body: '{"endpoint": "{{ value }}"}'
        headers: {Authorization: "Bearer ${CONFIG_TOKEN}"}   # secrets come from the environment
        current_url: https://config.example/v1/endpoints/orders   # optional: GET reads the value
        current_key: endpoint                                      # its dotted path in the JSON answer
      billing-clients:                # a Consul KV key (GET/PUT /v1/kv/KEY, check-and-set)
        kind: consul
        url: http://127.0.0.1:8500
        key: config/billing/kafka
        token: ${CONSUL_TOKEN}

The API (no Prefect here; errors are mq_runbooks.base.errors types):

    switch = switch_named(clusters, "kafka-clients")   # NotFoundError listing the known names
    switch.current()            -> str | None   the value clients see now (None: the switch holds none)
    switch.value_for("standby") -> str          the configured value for a cluster (ConfigError if none)
    old = switch.switch(new)    -> str | None   set `new`, return the value it replaced
    switch.restore(old)         -> None         put `old` back (None: remove the key, where possible)
    switch.describe()           -> str          where the switch lives, for plans and journals

Failures to read or write raise BrokerError (UnreachableError when the service did not answer).
An HTTP switch without `current_url` cannot be read: current() is the last value this engine sent
(kept in `state_file` across processes when set, else only in this object), else `initial`, else None.
A Consul switch writes with `?cas=<ModifyIndex read just before>`: a concurrent change is an error,
never overwritten silently.
"""
from __future__ import annotations

import base64
import functools
import json
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jinja2
import yaml

from mq_runbooks.base.clusters import Clusters, ConsulSwitchConfig, FileSwitchConfig, HttpSwitchConfig
from mq_runbooks.base.errors import BrokerError, ConfigError, NotFoundError, UnreachableError


class EndpointSwitch(ABC):
    """A named place that holds the value clients use to reach a cluster."""

    def __init__(self, name: str, config: FileSwitchConfig | HttpSwitchConfig | ConsulSwitchConfig):
        self.name = name
        self.config = config

    @abstractmethod
    def current(self) -> str | None:
        """The value clients see now; None when the switch holds no value."""

    @abstractmethod
    def _write(self, value: str | None, expected_old: str | None) -> None:
        """Store `value` (None: remove it)."""

    @abstractmethod
    def describe(self) -> str:
        """Where the switch lives, e.g. 'file /etc/app/kafka.json key kafka.bootstrap_servers'."""

    def switch(self, new: str) -> str | None:
        """Point clients at `new`; return the value it replaced (what restore() takes back)."""
        old = self.current()
        self._write(new, old)
        return old

    def restore(self, old: str | None) -> None:
        """Put back a value switch() returned; None removes the value (an HTTP switch refuses that)."""
        self._write(old, self.current())

    def value_for(self, cluster: str) -> str:
        """The configured value that points clients at `cluster` (clusters.yaml `values`)."""
        if cluster not in self.config.values:
            known = ", ".join(sorted(self.config.values)) or "none"
            raise ConfigError(f"switch {self.name!r} has no value for cluster {cluster!r} "
                              f"(values are set for: {known}); add it under switches.{self.name}.values")
        return self.config.values[cluster]


def switch_named(clusters: Clusters, name: str) -> EndpointSwitch:
    """The switch `name` of clusters.yaml, ready to use; NotFoundError naming the defined switches."""
    if name not in clusters.switches:
        known = ", ".join(sorted(clusters.switches)) or "none"
        raise NotFoundError(f"no endpoint switch named {name!r} in {clusters.source} (defined: {known})")
    config = clusters.switches[name]
    if config.kind == "file" and not Path(config.path).is_absolute():
        config = config.model_copy(update={"path": str(Path(clusters.source).parent / config.path)})
    return open_switch(name, config)


def open_switch(name: str, config: FileSwitchConfig | HttpSwitchConfig | ConsulSwitchConfig) -> EndpointSwitch:
    """A switch object for one switch configuration."""
    kinds = {"file": FileSwitch, "http": HttpSwitch, "consul": ConsulSwitch}
    return kinds[config.kind](name, config)


def _dig(document: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(document, dict) or part not in document:
            return None
        document = document[part]
    return document


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


class FileSwitch(EndpointSwitch):
    """A JSON or YAML file; written atomically (temporary file + rename), other keys kept.
    YAML comments are not kept."""

    config: FileSwitchConfig

    @property
    def path(self) -> Path:
        return Path(self.config.path)

    def _format(self) -> str:
        return self.config.format or ("json" if self.config.path.endswith(".json") else "yaml")

    def _load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise BrokerError(f"switch {self.name!r}: cannot read {self.path}: {exc.strerror}") from None
        try:
            document = json.loads(text) if self._format() == "json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise BrokerError(f"switch {self.name!r}: {self.path} is not valid {self._format().upper()}: {exc}") from None
        if document is None:
            return {}
        if not isinstance(document, dict):
            raise BrokerError(f"switch {self.name!r}: {self.path} must hold a mapping at the top level")
        return document

    def current(self) -> str | None:
        return _as_text(_dig(self._load(), self.config.key))

    def _write(self, value: str | None, expected_old: str | None) -> None:
        document = self._load()
        *parents, leaf = self.config.key.split(".")
        node = document
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise BrokerError(f"switch {self.name!r}: {'.'.join(parents)} in {self.path} is not a mapping")
            node = child
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
        text = (json.dumps(document, indent=2) + "\n" if self._format() == "json"
                else yaml.safe_dump(document, sort_keys=False))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(handle, "w") as file:
                file.write(text)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def describe(self) -> str:
        return f"file {self.path} key {self.config.key}"


@functools.cache
def _client() -> httpx.Client:
    # One client for the process: building one loads the CA bundle (~0.2 s).
    return httpx.Client()


def _request(name: str, method: str, url: str, timeout: float, **kwargs: Any) -> httpx.Response:
    try:
        return _client().request(method, url, timeout=timeout, **kwargs)
    except httpx.TimeoutException:
        raise UnreachableError(f"switch {name!r}: {method} {url} did not answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise UnreachableError(f"switch {name!r}: {method} {url} failed: {type(exc).__name__}: {exc}") from None


def _refused(name: str, response: httpx.Response) -> BrokerError:
    request = response.request
    return BrokerError(f"switch {name!r}: {request.method} {request.url} answered {response.status_code}: "
                       f"{response.text[:200]}")


class HttpSwitch(EndpointSwitch):
    """An HTTP call carrying the new value; readable only through `current_url`."""

    config: HttpSwitchConfig

    def __init__(self, name: str, config: HttpSwitchConfig):
        super().__init__(name, config)
        self._sent: str | None = None
        self._template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(config.body)

    def current(self) -> str | None:
        if self.config.current_url is not None:
            response = _request(self.name, "GET", self.config.current_url, self.config.timeout_s,
                                headers=self._headers())
            if response.status_code == 404:
                return None
            if response.status_code >= 400:
                raise _refused(self.name, response)
            if self.config.current_key is None:
                return response.text.strip()
            try:
                return _as_text(_dig(response.json(), self.config.current_key))
            except ValueError:
                raise BrokerError(f"switch {self.name!r}: GET {self.config.current_url} did not answer JSON") from None
        if self._sent is not None:
            return self._sent
        if self.config.state_file and Path(self.config.state_file).exists():
            return json.loads(Path(self.config.state_file).read_text())["value"]
        return self.config.initial

    def _headers(self) -> dict[str, str]:
        return {header: value.get_secret_value() for header, value in self.config.headers.items()}

    def _write(self, value: str | None, expected_old: str | None) -> None:
        if value is None:
            raise BrokerError(f"switch {self.name!r}: an HTTP switch cannot remove its value; restore a value")
        body = self._template.render(value=value, name=self.name)
        response = _request(self.name, self.config.method, self.config.url, self.config.timeout_s,
                            content=body.encode(), headers=self._headers())
        if response.status_code >= 400:
            raise _refused(self.name, response)
        self._sent = value
        if self.config.state_file:
            state = Path(self.config.state_file)
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text(json.dumps({"value": value}))

    def describe(self) -> str:
        return f"http {self.config.method} {self.config.url}"


class ConsulSwitch(EndpointSwitch):
    """A Consul KV key. Values are stored raw (Consul base64-encodes them in its JSON answers)."""

    config: ConsulSwitchConfig

    def _url(self, **query: str) -> tuple[str, dict[str, str]]:
        params = dict(query)
        if self.config.datacenter:
            params["dc"] = self.config.datacenter
        return f"{self.config.url}/v1/kv/{quote(self.config.key.strip('/'))}", params

    def _headers(self) -> dict[str, str]:
        return {"X-Consul-Token": self.config.token.get_secret_value()} if self.config.token else {}

    def _read(self) -> tuple[str | None, int]:
        """(value, ModifyIndex); (None, 0) when the key does not exist (cas=0 means 'create only')."""
        url, params = self._url()
        response = _request(self.name, "GET", url, self.config.timeout_s, params=params, headers=self._headers())
        if response.status_code == 404:
            return None, 0
        if response.status_code >= 400:
            raise _refused(self.name, response)
        entry = response.json()[0]
        raw = entry.get("Value")
        return (None if raw is None else base64.b64decode(raw).decode()), int(entry["ModifyIndex"])

    def current(self) -> str | None:
        return self._read()[0]

    def _write(self, value: str | None, expected_old: str | None) -> None:
        seen, index = self._read()
        if seen != expected_old:
            raise BrokerError(f"switch {self.name!r}: Consul key {self.config.key} changed meanwhile "
                              f"({expected_old!r} -> {seen!r}); not overwritten")
        url, params = self._url(cas=str(index))
        if value is None:
            response = _request(self.name, "DELETE", url, self.config.timeout_s, params=params, headers=self._headers())
        else:
            response = _request(self.name, "PUT", url, self.config.timeout_s, params=params,
                                content=value.encode(), headers=self._headers())
        if response.status_code >= 400:
            raise _refused(self.name, response)
        if response.text.strip() != "true":
            raise BrokerError(f"switch {self.name!r}: Consul refused the write of {self.config.key} (changed "
                              f"meanwhile: check-and-set index {index} is stale); not overwritten")

    def describe(self) -> str:
        return f"consul {self.config.url} key {self.config.key}"
