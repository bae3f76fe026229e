"""The engine's signing key, and what it signs: the answers given to a gate and the journal's entries.

Whoever holds the Prefect credential can write anything the Prefect API takes: a run's input, its
artifacts, its variables. So the engine does not believe what it reads there unless it carries an
HMAC-SHA256 by the signing key, which only the engine holds (`runbook serve` replicas and workers,
installed by an admin; the CLI in direct mode, for one person on their own machine):

    key = signing_key(settings)
    signature = sign(key, "answer", {"run": run_id, "key": "gate-1-1", "decision": "approve", ...})
    verify(key, "answer", {...}, signature)         # True only for what the key signed

The key is RUNBOOK_SIGNING_KEY (the same on every serve and worker of an installation) or, without
it, a random key kept in RUNBOOK_SIGNING_KEY_FILE (default ~/.config/mq-runbooks/signing.key), made
0600 on first use: the key of one machine.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from mq_runbooks.base.errors import ConfigError
from mq_runbooks.base.settings import Settings

__all__ = ["default_key_file", "sign", "signing_key", "verify"]

KEY_SETTING = "RUNBOOK_SIGNING_KEY"
_MIN_KEY_BYTES = 16


def default_key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mq-runbooks" / "signing.key"


def signing_key(settings: Settings) -> bytes:
    """The key: RUNBOOK_SIGNING_KEY, else the key file's (made on first use). ConfigError if the
    setting is too short to be a key or the file cannot be read or made."""
    if settings.signing_key is not None:
        key = settings.signing_key.get_secret_value().encode("utf-8")
        if len(key) < _MIN_KEY_BYTES:
            raise ConfigError(f"{KEY_SETTING} is too short to be a key: at least {_MIN_KEY_BYTES} characters "
                              "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return key
    path = settings.signing_key_file or default_key_file()
    cached = _file_keys.get(path)
    if cached is not None:
        return cached
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        key = _make_key_file(path)
    except OSError as exc:
        raise ConfigError(f"the signing key file {path} cannot be read: {exc.strerror}") from None
    if len(key) < _MIN_KEY_BYTES:
        raise ConfigError(f"the signing key file {path} holds no key (at least {_MIN_KEY_BYTES} bytes); "
                          "delete it to have a new one made")
    _file_keys[path] = key
    return key


_file_keys: dict[Path, bytes] = {}


def _make_key_file(path: Path) -> bytes:
    """A new random key in `path`, 0600, unless another process made one first (then that one)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_urlsafe(32).encode("ascii")
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(key + b"\n")
        try:
            os.link(temporary, path)  # never replaces a key another process made meanwhile
        except FileExistsError:
            key = path.read_bytes().strip()
        finally:
            temporary.unlink()
        return key
    except OSError as exc:
        raise ConfigError(f"the signing key file {path} cannot be made: {exc.strerror} "
                          f"(set {KEY_SETTING}, or RUNBOOK_SIGNING_KEY_FILE to a writable path)") from None


def _message(purpose: str, fields: dict[str, Any]) -> bytes:
    # The purpose keeps a signature of one kind of thing from passing for another.
    return json.dumps([purpose, fields], sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode("utf-8")


def sign(key: bytes, purpose: str, fields: dict[str, Any]) -> str:
    """The hex HMAC-SHA256 of `fields` (JSON values) for `purpose`."""
    return hmac.new(key, _message(purpose, fields), hashlib.sha256).hexdigest()


def verify(key: bytes, purpose: str, fields: dict[str, Any], signature: Any) -> bool:
    """Whether `signature` is the key's for these fields and purpose (in constant time)."""
    return isinstance(signature, str) and hmac.compare_digest(sign(key, purpose, fields), signature)
