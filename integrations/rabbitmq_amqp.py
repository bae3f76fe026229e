"""RabbitMQ over AMQP: the reachability check, opening a named and bounded connection to a vhost, and
the URL helpers both need.

    amqp_check(cluster.amqp_url.get_secret_value(), 5, name="primary")      # 'RabbitMQ 3.10.8'
    connection = open_amqp(amqp_url, "/", "mq-runbooks canary")           # pika.BlockingConnection
    vhost_uri(amqp_url, "orders")                                          # amqp://u:p@host:5672/orders

Every call answers within about `timeout_s` or raises UnreachableError; a refused login or vhost
raises BrokerError. Messages never contain the URL's password. The management HTTP API is
mq_runbooks.integrations.rabbitmq.
"""
from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from mq_runbooks.base.errors import BrokerError, UnreachableError

__all__ = ["amqp_check", "open_amqp", "vhost_uri", "without_userinfo"]


def amqp_check(amqp_url: str, timeout_s: float = 10.0, *, name: str = "rabbitmq") -> str:
    """Open an AMQP connection, read who answered, close it: 'RabbitMQ 3.10.8'.

    Raises UnreachableError if nothing answers (within about `timeout_s`), BrokerError if the broker
    refuses the login or the vhost. Messages never contain the URL's password.
    """
    where = f"rabbitmq cluster {name!r} ({without_userinfo(amqp_url)})"
    try:
        parameters = pika.URLParameters(amqp_url)
    except Exception as exc:  # pika raises ValueError, KeyError, ... for a malformed URL
        raise BrokerError(f"{where}: the AMQP URL is invalid ({type(exc).__name__})") from None
    # the URL's query may carry its own timeouts and retries; a check must stay bounded
    parameters.socket_timeout = timeout_s
    parameters.stack_timeout = timeout_s
    parameters.connection_attempts = 1
    parameters.client_properties = {"connection_name": "mq-runbooks amqp_check"}
    try:
        connection = pika.BlockingConnection(parameters)
    except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError) as exc:
        raise BrokerError(f"{where} refused the connection: {_scrub(str(exc), amqp_url)}") from None
    except (pika.exceptions.AMQPError, AMQPConnectorException, OSError) as exc:  # a handshake timeout is the 2nd
        raise UnreachableError(
            f"{where} did not answer within {timeout_s:g}s: {_scrub(str(exc) or repr(exc), amqp_url)}"
        ) from None
    try:
        properties = connection._impl.server_properties or {}  # pika keeps Connection.Start's properties here
        return f"{properties.get('product', 'unknown')} {properties.get('version', '?')}"
    finally:
        try:
            connection.close()
        except pika.exceptions.AMQPError:
            pass  # the answer is in hand; a failed close changes nothing for the caller


def open_amqp(amqp_url: str, vhost: str, connection_name: str, timeout_s: float = 10.0) -> pika.BlockingConnection:
    """An AMQP connection to `vhost`, named `connection_name` in the management UI; UnreachableError if
    nothing answers, BrokerError if the login or the vhost is refused."""
    parameters = pika.URLParameters(vhost_uri(amqp_url, vhost))
    parameters.socket_timeout = parameters.stack_timeout = timeout_s
    parameters.connection_attempts = 1
    parameters.client_properties = {"connection_name": connection_name}
    where = f"rabbitmq at {parameters.host}:{parameters.port} (vhost {vhost!r})"
    try:
        return pika.BlockingConnection(parameters)
    except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError) as exc:
        raise BrokerError(f"{where} refused the connection: {type(exc).__name__}") from None
    except (pika.exceptions.AMQPError, AMQPConnectorException, OSError) as exc:
        raise UnreachableError(f"{where} did not answer within {timeout_s:g}s: {type(exc).__name__}") from None


def vhost_uri(amqp_url: str, vhost: str) -> str:
    """The cluster's AMQP URL (credentials and query kept) pointed at `vhost`."""
    parts = urlsplit(amqp_url)
    return parts._replace(path="/" + quote(vhost, safe="")).geturl()


def without_userinfo(url: str) -> str:
    """The URL without user and password, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=host).geturl()


def _scrub(message: str, url: str) -> str:
    """The message with the URL's password (raw or decoded) masked."""
    password = urlsplit(url).password
    for form in {password, unquote(password)} if password else ():
        message = message.replace(form, "***")
    return message
