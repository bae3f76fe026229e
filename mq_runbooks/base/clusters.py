"""clusters.yaml: the Kafka, RabbitMQ, Redis, ActiveMQ Artemis and RocketMQ clusters the engine may act on, and which
is whose standby.

    kafka:
      primary: {bootstrap_servers: "127.0.0.1:19092"}
      standby: {bootstrap_servers: "127.0.0.1:29092", standby_of: primary,
                replication: {kind: mirrormaker2, source_alias: primary}}
    rabbitmq:
      primary: {amqp_url: "amqp://guest:${RABBIT_PASSWORD:-guest}@127.0.0.1:5673/",
                management_url: "http://127.0.0.1:15673"}
    redis:
      primary: {url: "redis://127.0.0.1:6380/0"}
      replica: {url: "redis://127.0.0.1:6381/0", standby_of: primary}
    artemis:
      primary: {management_url: "http://127.0.0.1:8162/console/jolokia", messaging_url: "amqp://127.0.0.1:61617",
                user: admin, password: "${ARTEMIS_PASSWORD}"}
      backup: {management_url: ..., messaging_url: ..., user: admin, password: ..., standby_of: primary}
    rocketmq:
      primary: {namesrv: "127.0.0.1:9876", proxy_endpoint: "127.0.0.1:8081",
                access_key: "${ROCKETMQ_ACCESS_KEY:-}", secret_key: "${ROCKETMQ_SECRET_KEY:-}"}

Strings may use ${VAR} or ${VAR:-default}. Secrets (passwords, URLs that hold them) are SecretStr:
they print as '**********' and are only revealed when a client is built.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import unquote, urlsplit

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from mq_runbooks.base.errors import ConfigError, UnknownClusterError
from mq_runbooks.base.suggest import did_you_mean
from mq_runbooks.base.validation import config_error, environ_or_os, substitute_env

if TYPE_CHECKING:
    import redis


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MirrorReplication(_Strict):
    kind: Literal["mirrormaker2"]
    source_alias: str = Field(description="MM2's alias of the source cluster: the prefix of replicated topics")


class KafkaCluster(_Strict):
    name: str
    bootstrap_servers: str
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    standby_of: str | None = None
    replication: MirrorReplication | None = None
    request_timeout_s: float = Field(10.0, gt=0, le=300)

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server.strip()!r} is not host:port (list several with commas)")
        return value

    @model_validator(mode="after")
    def _sasl_complete(self) -> "KafkaCluster":
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if self.sasl_mechanism in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} and (
            self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs sasl_username and sasl_password")
        return self

    def client_config(self) -> dict[str, str]:
        """librdkafka settings for confluent-kafka clients (secrets revealed here only)."""
        config = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol}
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
        }
        config.update({key: value for key, value in optional.items() if value is not None})
        return config


class RabbitCluster(_Strict):
    name: str
    amqp_url: SecretStr
    management_url: str
    management_username: str | None = None
    management_password: SecretStr | None = None
    standby_of: str | None = None
    request_timeout_s: float = Field(10.0, gt=0, le=300)

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: SecretStr) -> SecretStr:
        if urlsplit(value.get_secret_value()).scheme not in {"amqp", "amqps"}:
            raise ValueError("must start with amqp:// or amqps://")
        return value

    @field_validator("management_url")
    @classmethod
    def _http_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"http", "https"}:
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    def management_credentials(self) -> tuple[str, str]:
        """The management API's user and password: given explicitly, else those of the AMQP URL."""
        url = urlsplit(self.amqp_url.get_secret_value())
        username = self.management_username or unquote(url.username or "guest")
        if self.management_password is not None:
            return username, self.management_password.get_secret_value()
        return username, unquote(url.password or "guest")

    @property
    def display_amqp_url(self) -> str:
        """The AMQP URL without its password, for tables and logs."""
        return _display_url(self.amqp_url)


class RedisCluster(_Strict):
    """A Redis server (a primary, or a replica with `standby_of`) reached with redis-py."""

    name: str
    url: SecretStr = Field(description="redis://[user:password@]host:port/db, rediss:// for TLS")
    username: str | None = Field(None, description="ACL user (default: the URL's, else 'default')")
    password: SecretStr | None = Field(None, description="ACL password, if the URL holds none")
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    standby_of: str | None = None
    socket_timeout_s: float = Field(5.0, gt=0, le=300, description="a command's answer, connecting included")

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr) -> SecretStr:
        url = urlsplit(value.get_secret_value())
        if url.scheme not in {"redis", "rediss"}:
            raise ValueError("must start with redis:// or rediss:// (TLS)")
        if not url.hostname:
            raise ValueError("names no host: redis://host:port/db")
        if url.path.strip("/") and not url.path.strip("/").isdigit():
            raise ValueError(f"the database {url.path.strip('/')!r} is not a number: redis://host:port/0")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "RedisCluster":
        url = urlsplit(self.url.get_secret_value())
        if self.password is not None and url.password:
            raise ValueError("the password is given twice (in url and in password): keep one")
        tls_files = [f for f in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location")
                     if getattr(self, f) is not None]
        if tls_files and url.scheme != "rediss":
            raise ValueError(f"{', '.join(tls_files)} need a rediss:// url (TLS)")
        return self

    @property
    def display_url(self) -> str:
        """The URL without its password, for tables and logs."""
        return _display_url(self.url)

    def client(self) -> "redis.Redis":
        """A redis-py client (bytes in and out, no retries: a dead server costs one timeout, not
        several). Secrets are revealed here only."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options: dict[str, object] = {
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.socket_timeout_s,
            "retry": Retry(NoBackoff(), 0),
            "client_name": "mq-runbooks",
        }
        if self.username is not None:
            options["username"] = self.username
        if self.password is not None:
            options["password"] = self.password.get_secret_value()
        if urlsplit(self.url.get_secret_value()).scheme == "rediss":
            options.update({
                "ssl_ca_certs": self.ssl_ca_location,
                "ssl_certfile": self.ssl_certificate_location,
                "ssl_keyfile": self.ssl_key_location,
                "ssl_password": self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
                "ssl_check_hostname": self.ssl_check_hostname,
            })
        return redis.Redis.from_url(self.url.get_secret_value(), **options)


class ArtemisCluster(_Strict):
    """An ActiveMQ Artemis broker: Jolokia management over HTTP(S), messaging over AMQP 1.0 (amqp:// or
    amqps://), one user for both. `standby_of` names the primary of a replicating backup."""

    name: str
    management_url: str = Field(description="Jolokia: http(s)://host:port/console/jolokia")
    messaging_url: str = Field(description="AMQP 1.0: amqp://host:port, or amqps://host:port for TLS")
    user: str = Field(min_length=1)
    password: SecretStr
    origin: str | None = Field(None, description="the Origin header Jolokia's CORS policy checks "
                                                 "(default: the management URL's scheme://host:port)")
    ssl_ca_location: str | None = Field(None, description="CA bundle for https:// and amqps:// (default: the system's)")
    ssl_verify: bool = Field(True, description="verify the broker's certificate (turn off only for a test broker)")
    standby_of: str | None = None
    request_timeout_s: float = Field(10.0, gt=0, le=300)

    @field_validator("management_url")
    @classmethod
    def _jolokia_url(cls, value: str) -> str:
        url = urlsplit(value)
        if url.scheme not in {"http", "https"} or not url.hostname:
            raise ValueError("must be http(s)://host:port/console/jolokia")
        if url.username or url.password:
            raise ValueError("must not hold credentials: use user and password")
        return value.rstrip("/")

    @field_validator("messaging_url")
    @classmethod
    def _amqp_url(cls, value: str) -> str:
        url = urlsplit(value)
        if url.scheme not in {"amqp", "amqps"}:
            raise ValueError("must start with amqp:// or amqps:// (TLS)")
        if url.username or url.password:
            raise ValueError("must not hold credentials: use user and password")
        try:
            port = url.port
        except ValueError:
            port = None
        if not url.hostname or port is None:
            raise ValueError(f"{value!r} names no host:port, e.g. amqp://127.0.0.1:61616")
        return value

    @property
    def jolokia_origin(self) -> str:
        url = urlsplit(self.management_url)
        return self.origin or f"{url.scheme}://{url.netloc}"

    @property
    def messaging_address(self) -> tuple[str, int, bool]:
        """(host, port, tls) of the AMQP acceptor."""
        url = urlsplit(self.messaging_url)
        return url.hostname or "", url.port or 0, url.scheme == "amqps"


def _host_port(value: str, example: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port, e.g. {example}")
    return value


class RocketMQCluster(_Strict):
    """A RocketMQ cluster: its name server(s) (admin requests go to the brokers they route to) and the
    5.x proxy's gRPC endpoint (messaging: canaries, tests). With ACL on, access_key and secret_key sign
    every request; `tls` speaks TLS to name servers, brokers and the proxy."""

    name: str
    namesrv: str = Field(description="host:port of a name server; several separated by ';'")
    proxy_endpoint: str | None = Field(None, description="host:port of the proxy's gRPC endpoint (messaging)")
    access_key: str | None = Field(None, description="ACL access key (empty: ACL off)")
    secret_key: SecretStr | None = Field(None, description="ACL secret key")
    tls: bool = Field(False, description="TLS to name servers, brokers and the proxy")
    ssl_ca_location: str | None = Field(None, description="CA bundle for TLS (default: the system's)")
    standby_of: str | None = None
    request_timeout_s: float = Field(10.0, gt=0, le=300)

    @field_validator("namesrv")
    @classmethod
    def _namesrv(cls, value: str) -> str:
        addresses = [a.strip() for a in value.split(";") if a.strip()]
        if not addresses:
            raise ValueError("names no name server, e.g. 127.0.0.1:9876")
        return ";".join(_host_port(a, "127.0.0.1:9876") for a in addresses)

    @field_validator("proxy_endpoint")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        return value if value is None else _host_port(value, "127.0.0.1:8081")

    @field_validator("access_key", "secret_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value  # "${ROCKETMQ_ACCESS_KEY:-}" unset: ACL off

    @model_validator(mode="after")
    def _keys_together(self) -> "RocketMQCluster":
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("access_key and secret_key go together (both empty: ACL off)")
        return self

    @property
    def namesrv_addresses(self) -> list[str]:
        return self.namesrv.split(";")


def _display_url(secret_url: SecretStr) -> str:
    """scheme://user:***@host:port/path: a URL fit for tables and logs."""
    url = urlsplit(secret_url.get_secret_value())
    netloc = url.hostname or ""
    if url.port:
        netloc += f":{url.port}"
    if url.username:
        netloc = f"{url.username}:***@{netloc}"
    elif url.password:
        netloc = f":***@{netloc}"
    return f"{url.scheme}://{netloc}{url.path}"


class Clusters(_Strict):
    source: str = "clusters.yaml"
    kafka: dict[str, KafkaCluster] = {}
    rabbitmq: dict[str, RabbitCluster] = {}
    redis: dict[str, RedisCluster] = {}
    artemis: dict[str, ArtemisCluster] = {}
    rocketmq: dict[str, RocketMQCluster] = {}
    switches: dict[str, EndpointSwitchConfig] = {}

    @model_validator(mode="after")
    def _standbys_exist(self) -> "Clusters":
        for kind, clusters in (("kafka", self.kafka), ("rabbitmq", self.rabbitmq), ("redis", self.redis),
                               ("artemis", self.artemis), ("rocketmq", self.rocketmq)):
            for name, cluster in clusters.items():
                if cluster.standby_of is not None and cluster.standby_of not in clusters:
                    raise ValueError(
                        f"{kind}.{name}.standby_of: {cluster.standby_of!r} is not a {kind} cluster here "
                        f"(defined: {', '.join(sorted(clusters))})"
                    )
        return self

    def kafka_cluster(self, name: str) -> KafkaCluster:
        return self._lookup("kafka", self.kafka, name)

    def rabbit_cluster(self, name: str) -> RabbitCluster:
        return self._lookup("rabbitmq", self.rabbitmq, name)

    def redis_cluster(self, name: str) -> RedisCluster:
        return self._lookup("redis", self.redis, name)

    def artemis_cluster(self, name: str) -> ArtemisCluster:
        return self._lookup("artemis", self.artemis, name)

    def rocketmq_cluster(self, name: str) -> RocketMQCluster:
        return self._lookup("rocketmq", self.rocketmq, name)

    def _lookup(self, kind: str, clusters: Mapping[str, BaseModel], name: str):
        if name not in clusters:
            known = ", ".join(sorted(clusters)) or "none"
            raise UnknownClusterError(f"no {kind} cluster named {name!r} in {self.source} (defined: {known})"
                                      f"{did_you_mean(name, clusters)}")
        return clusters[name]


def parse_clusters(text: str, source: str, environ: Mapping[str, str] | None = None) -> Clusters:
    """Parse and validate the text of a clusters.yaml; errors name the file, the field and the reason."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with keys 'kafka', 'rabbitmq', 'redis', "
                          "'artemis', 'switches'")
    document = substitute_env(document, environ_or_os(environ), source)
    for kind in ("kafka", "rabbitmq", "redis", "artemis", "rocketmq"):
        section = document.get(kind)
        if isinstance(section, dict):
            for name, cluster in section.items():
                if isinstance(cluster, dict):
                    cluster.setdefault("name", name)
    try:
        return Clusters(source=source, **document)
    except ValidationError as exc:
        raise config_error(source, exc) from None
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_clusters(path: Path, environ: Mapping[str, str] | None = None) -> Clusters:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path} does not exist: write one (see README, 'Configuration') or point RUNBOOK_CLUSTERS at it"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory: point RUNBOOK_CLUSTERS at the clusters.yaml file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (an invalid byte at position {exc.start}): "
                          f"write clusters.yaml in UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror}): check RUNBOOK_CLUSTERS") from None
    return parse_clusters(text, str(path), environ)


# Endpoint switches: how clients learn which cluster to use (integrations/switches.py acts on them).
class _SwitchConfig(_Strict):
    values: dict[str, str] = Field(
        {}, description="cluster name -> the value that points clients at that cluster (e.g. its bootstrap servers)")
    timeout_s: float = Field(10.0, gt=0, le=300)


class FileSwitchConfig(_SwitchConfig):
    """A JSON or YAML file that clients (or a config agent) read; `key` is a dotted path in it."""
    kind: Literal["file"]
    path: str
    key: str = Field(description="dotted path, e.g. kafka.bootstrap_servers")
    format: Literal["json", "yaml"] | None = Field(None, description="default: from the suffix (.json, .yaml, .yml)")

    @field_validator("key")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if not value or "" in value.split("."):
            raise ValueError(f"{value!r} is not a dotted key path like kafka.bootstrap_servers")
        return value

    @model_validator(mode="after")
    def _format_known(self) -> "FileSwitchConfig":
        if self.format is None and not self.path.endswith((".json", ".yaml", ".yml")):
            raise ValueError(f"cannot tell the format of {self.path!r} from its suffix: set format: json or yaml")
        return self


class HttpSwitchConfig(_SwitchConfig):
    """An HTTP call that points clients elsewhere; `body` is a Jinja2 template over `value` and `name`."""
    kind: Literal["http"]
    url: str
    method: Literal["POST", "PUT", "PATCH"] = "PUT"
    body: str = "{{ value }}"
    headers: dict[str, SecretStr] = Field({}, description="use ${VAR} for tokens: values never print")
    current_url: str | None = Field(None, description="GET here reads the current value (default: not readable)")
    current_key: str | None = Field(None, description="dotted path of the value in current_url's JSON answer")
    initial: str | None = Field(None, description="the value assumed before this engine ever switched it")
    state_file: str | None = Field(None, description="where the last value sent is kept between processes")

    @field_validator("url", "current_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in {"http", "https"}:
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("body")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            jinja2.Environment().parse(value)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"not a valid Jinja2 template: {exc}") from None
        return value


class ConsulSwitchConfig(_SwitchConfig):
    """A Consul KV key, read with GET and written with PUT (check-and-set) on /v1/kv/KEY."""
    kind: Literal["consul"]
    key: str = Field(min_length=1)
    url: str = "http://127.0.0.1:8500"
    token: SecretStr | None = None
    datacenter: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"http", "https"}:
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


EndpointSwitchConfig = Annotated[FileSwitchConfig | HttpSwitchConfig | ConsulSwitchConfig, Field(discriminator="kind")]
Clusters.model_rebuild()
