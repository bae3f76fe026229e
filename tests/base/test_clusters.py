from pathlib import Path

import pytest

from mq_runbooks.base.clusters import load_clusters, parse_clusters
from mq_runbooks.base.errors import ConfigError, UnknownClusterError

REPO = Path(__file__).resolve().parents[2]


def test_default_clusters_file_describes_the_local_stack():
    clusters = load_clusters(REPO / "clusters.yaml", environ={})
    assert clusters.kafka_cluster("primary").client_config() == {
        "bootstrap.servers": "127.0.0.1:19092", "security.protocol": "PLAINTEXT",
    }
    standby = clusters.kafka_cluster("standby")
    assert standby.standby_of == "primary" and standby.replication.source_alias == "primary"
    rabbit = clusters.rabbit_cluster("standby")
    assert rabbit.management_url == "http://127.0.0.1:15674" and rabbit.standby_of == "primary"
    assert rabbit.management_credentials() == ("guest", "guest")


def test_environment_substitution_with_defaults_and_ports():
    clusters = load_clusters(REPO / "clusters.yaml", environ={"STACK_KAFKA_PRIMARY_PORT": "1234",
                                                               "RABBIT_PASSWORD": "s3cret"})
    assert clusters.kafka_cluster("primary").bootstrap_servers == "127.0.0.1:1234"
    rabbit = clusters.rabbit_cluster("primary")
    assert rabbit.management_credentials() == ("guest", "s3cret")
    # The secret never shows in reprs or display forms.
    assert "s3cret" not in repr(rabbit) and "s3cret" not in rabbit.display_amqp_url
    assert rabbit.display_amqp_url == "amqp://guest:***@127.0.0.1:5673/"


def test_sasl_password_is_secret_and_reaches_only_the_client_config():
    text = """
kafka:
  prod:
    bootstrap_servers: "k1:9093,k2:9093"
    security_protocol: SASL_SSL
    sasl_mechanism: SCRAM-SHA-512
    sasl_username: ${KAFKA_USER}
    sasl_password: ${KAFKA_PASSWORD}
    ssl_ca_location: /etc/ca.pem
"""
    clusters = parse_clusters(text, "prod.yaml", environ={"KAFKA_USER": "svc", "KAFKA_PASSWORD": "hunter2"})
    prod = clusters.kafka_cluster("prod")
    assert "hunter2" not in repr(prod) and "hunter2" not in str(prod.model_dump())
    config = prod.client_config()
    assert config["sasl.password"] == "hunter2" and config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["ssl.ca.location"] == "/etc/ca.pem"


@pytest.mark.parametrize("text, expected", [
    ("kafka:\n  a: {bootstrap_servers: 'x:1', colour: red}\n", "kafka.a.colour: unknown key"),
    ("kafka:\n  a: {}\n", "kafka.a.bootstrap_servers: required, but missing"),
    ("kafka:\n  a: {bootstrap_servers: 'nohost'}\n", "'nohost' is not host:port"),
    ("kafka:\n  a: {bootstrap_servers: 'x:1', security_protocol: TLS}\n", "kafka.a.security_protocol: got 'TLS', allowed:"),
    ("kafka:\n  a: {bootstrap_servers: 'x:1', security_protocol: SASL_SSL}\n", "needs sasl_mechanism"),
    ("kafka:\n  a: {bootstrap_servers: 'x:1', standby_of: b}\n", "kafka.a.standby_of: 'b' is not a kafka cluster"),
    ("rabbitmq:\n  r: {amqp_url: 'http://x', management_url: 'http://x:15672'}\n", "rabbitmq.r.amqp_url: must start with amqp://"),
    ("kafka:\n  a: {bootstrap_servers: '${NOPE}:1'}\n", "kafka.a.bootstrap_servers refers to ${NOPE}, which is not set"),
    ("kafka: [1, 2\n", "is not valid YAML"),
    ("- just a list\n", "the top level must be a mapping"),
    ("nats:\n  a: {}\n", "nats: unknown key"),
    ("redis:\n  r: {url: 'http://x:6379'}\n", "redis.r.url: must start with redis:// or rediss://"),
    ("redis:\n  r: {url: 'redis://x:6379/orders'}\n", "the database 'orders' is not a number"),
    ("redis:\n  r: {url: 'redis://:a@x:6379', password: b}\n", "the password is given twice"),
    ("redis:\n  r: {url: 'redis://x:6379', ssl_ca_location: /ca.pem}\n", "ssl_ca_location need a rediss:// url"),
    ("redis:\n  r: {url: 'redis://x:6379', socket_timeout_s: 0}\n", "redis.r.socket_timeout_s"),
    ("redis:\n  r: {url: 'redis://x:6379', standby_of: main}\n", "redis.r.standby_of: 'main' is not a redis cluster"),
])
def test_malformed_clusters_file_names_file_field_and_reason(text, expected):
    with pytest.raises(ConfigError) as error:
        parse_clusters(text, "bad-clusters.yaml", environ={})
    assert "bad-clusters.yaml" in str(error.value)
    assert expected in str(error.value)


def test_redis_clusters_of_the_local_stack_and_their_clients():
    clusters = load_clusters(REPO / "clusters.yaml", environ={"STACK_REDIS_REPLICA_PORT": "7001"})
    primary, replica = clusters.redis_cluster("primary"), clusters.redis_cluster("replica")
    assert primary.display_url == "redis://127.0.0.1:6380/0" and primary.standby_of is None
    assert replica.display_url == "redis://127.0.0.1:7001/0" and replica.standby_of == "primary"
    client = primary.client()
    options = client.connection_pool.connection_kwargs
    assert (options["host"], options["port"], options["db"]) == ("127.0.0.1", 6380, 0)
    assert options["socket_timeout"] == options["socket_connect_timeout"] == 5.0
    with pytest.raises(UnknownClusterError, match=r"no redis cluster named 'main'.*defined: primary, replica"):
        clusters.redis_cluster("main")


def test_redis_passwords_are_secret_and_reach_only_the_client():
    text = """
redis:
  in-url: {url: "rediss://svc:${REDIS_PASSWORD}@redis.example:6380/2", ssl_ca_location: /etc/ca.pem}
  acl: {url: "redis://redis.example:6379", username: svc, password: "${REDIS_PASSWORD}", socket_timeout_s: 2}
"""
    clusters = parse_clusters(text, "prod.yaml", environ={"REDIS_PASSWORD": "hunter2"})
    in_url, acl = clusters.redis_cluster("in-url"), clusters.redis_cluster("acl")
    for cluster in (in_url, acl):
        assert "hunter2" not in repr(cluster) and "hunter2" not in str(cluster.model_dump())
        assert "hunter2" not in cluster.display_url
    assert in_url.display_url == "rediss://svc:***@redis.example:6380/2"
    tls = in_url.client().connection_pool.connection_kwargs
    assert (tls["username"], tls["password"], tls["db"], tls["ssl_ca_certs"]) == ("svc", "hunter2", 2, "/etc/ca.pem")
    plain = acl.client().connection_pool.connection_kwargs
    assert (plain["username"], plain["password"], plain["socket_timeout"]) == ("svc", "hunter2", 2)


def test_unknown_cluster_lists_the_defined_ones():
    clusters = load_clusters(REPO / "clusters.yaml", environ={})
    with pytest.raises(UnknownClusterError, match=r"no kafka cluster named 'nope'.*defined: primary, standby"):
        clusters.kafka_cluster("nope")


def test_missing_file_says_how_to_fix_it(tmp_path):
    with pytest.raises(ConfigError, match="does not exist.*RUNBOOK_CLUSTERS"):
        load_clusters(tmp_path / "absent.yaml")


def test_artemis_clusters_of_the_local_stack():
    clusters = load_clusters(REPO / "clusters.yaml", environ={"ARTEMIS_PASSWORD": "t0ps3cret"})
    primary, backup = clusters.artemis_cluster("primary"), clusters.artemis_cluster("backup")
    assert primary.management_url == "http://127.0.0.1:8162/console/jolokia"
    assert primary.jolokia_origin == "http://127.0.0.1:8162"
    assert primary.messaging_address == ("127.0.0.1", 61617, False)
    assert backup.standby_of == "primary" and backup.messaging_address[1] == 61618
    assert primary.password.get_secret_value() == "t0ps3cret"
    assert "t0ps3cret" not in repr(primary) and "t0ps3cret" not in str(primary.model_dump())


@pytest.mark.parametrize("text, expected", [
    ("artemis:\n  a: {management_url: 'http://x:1/console/jolokia', messaging_url: 'amqp://x:2', user: u}\n",
     "artemis.a.password: required, but missing"),
    ("artemis:\n  a: {management_url: 'ftp://x', messaging_url: 'amqp://x:2', user: u, password: p}\n",
     "artemis.a.management_url: must be http(s)://host:port/console/jolokia"),
    ("artemis:\n  a: {management_url: 'http://u:p@x:1', messaging_url: 'amqp://x:2', user: u, password: p}\n",
     "artemis.a.management_url: must not hold credentials"),
    ("artemis:\n  a: {management_url: 'http://x:1', messaging_url: 'stomp://x:2', user: u, password: p}\n",
     "artemis.a.messaging_url: must start with amqp:// or amqps://"),
    ("artemis:\n  a: {management_url: 'http://x:1', messaging_url: 'amqp://x', user: u, password: p}\n",
     "artemis.a.messaging_url: 'amqp://x' names no host:port"),
    ("artemis:\n  a: {management_url: 'http://x:1', messaging_url: 'amqp://x:2', user: u, password: p, tls: on}\n",
     "artemis.a.tls: unknown key"),
    ("artemis:\n  a: {management_url: 'http://x:1', messaging_url: 'amqp://x:2', user: u, password: p,"
     " standby_of: z}\n", "artemis.a.standby_of: 'z' is not a artemis cluster"),
])
def test_malformed_artemis_section_names_the_field(text, expected):
    with pytest.raises(ConfigError) as caught:
        parse_clusters(text, "c.yaml", environ={})
    assert expected in str(caught.value), str(caught.value)


def test_unknown_artemis_cluster_lists_the_defined_ones():
    clusters = load_clusters(REPO / "clusters.yaml", environ={})
    with pytest.raises(UnknownClusterError, match=r"no artemis cluster named 'primry'.*defined: backup, primary"):
        clusters.artemis_cluster("primry")


def test_rocketmq_cluster_of_the_local_stack_keeps_its_secret_key_secret():
    clusters = load_clusters(REPO / "clusters.yaml", environ={"ROCKETMQ_ACCESS_KEY": "ops", "ROCKETMQ_SECRET_KEY": "s3cr3t"})
    primary = clusters.rocketmq_cluster("primary")
    assert primary.namesrv_addresses == ["127.0.0.1:9876"] and primary.proxy_endpoint == "127.0.0.1:8081"
    assert primary.access_key == "ops" and primary.secret_key.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(primary) and "s3cr3t" not in str(primary.model_dump())
    acl_off = load_clusters(REPO / "clusters.yaml", environ={}).rocketmq_cluster("primary")
    assert acl_off.access_key is None and acl_off.secret_key is None


@pytest.mark.parametrize("text, expected", [
    ("rocketmq:\n  a: {proxy_endpoint: 'x:1'}\n", "rocketmq.a.namesrv: required, but missing"),
    ("rocketmq:\n  a: {namesrv: 'x'}\n", "'x' is not host:port"),
    ("rocketmq:\n  a: {namesrv: 'x:1', proxy_endpoint: 'x:99999'}\n", "'x:99999' is not host:port"),
    ("rocketmq:\n  a: {namesrv: 'x:1', access_key: ops}\n", "access_key and secret_key go together"),
    ("rocketmq:\n  a: {namesrv: 'x:1', user: u}\n", "rocketmq.a.user: unknown key"),
])
def test_malformed_rocketmq_section_names_the_field(text, expected):
    with pytest.raises(ConfigError) as caught:
        parse_clusters(text, "c.yaml", environ={})
    assert expected in str(caught.value), str(caught.value)
