"""Who answers a gate, as proven as the answer allows: the check a judge of answers makes
(`verify_answer`: `runbook approve|reject`, serve for Slack) before it signs the answer
(kit/gate.py), and personal tokens.

Tokens are issued and revoked by an admin, who holds the engine's signing key (`runbook tokens
issue|revoke|list`, kit/signing.py). Only their HMAC by that key is kept, in one Prefect Variable per
deployment name (`mq_runbooks_tokens_<RUNBOOK_DEPLOYMENT>`): whoever can write Prefect's variables but
lacks the key cannot mint a token that the engine takes, and no file or run holds a token. A person
presents theirs with RUNBOOK_TOKEN or a token file (never on the command line); the judge looks it up and signs the answer with the kind of proof
("token"), so the run's input never holds the token itself.

    proof ""             the name typed (`--as`): not proven                            kind typed-name
    proof "os-user"      the OS user (by uid; never root) the CLI runs as: as proven as that machine's logins  kind os-user
    proof "slack"        a Slack user id from a request whose signature serve verified   kind slack-signature
    proof "proxy"        the person a trusted proxy asserted to serve's API              kind proxy-identity
    proof "token:<t>"    the person the token was issued to; a wrong or revoked one is refused   kind token

A team chooses the least proof its gates take with RUNBOOK_APPROVAL_PROOF (Settings.approval_proof):
`typed` takes all four (the default, so an existing set-up and the demo keep working), `os-user`
refuses a typed name, `token` refuses a typed name and the OS user. Slack's signature and a valid
token are always taken. The judge checks it, and the gate again with the setting of the process the
run executes in.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from mq_runbooks.base.errors import UsageError

TOKEN_PREFIX = "token:"
SLACK_PROOF = "slack"
OS_USER_PROOF = "os-user"
PROXY_PROOF = "proxy"  # serve's API: the person a trusted authenticating proxy asserted
PROOF_SETTING = "RUNBOOK_APPROVAL_PROOF"
# The kinds of proof each RUNBOOK_APPROVAL_PROOF takes.
_PROVEN = {"token", "slack-signature", "proxy-identity"}
_TAKEN = {"typed": {"typed-name", "os-user", *_PROVEN}, "os-user": {"os-user", *_PROVEN}, "token": _PROVEN}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


def variable_name(deployment: str) -> str:
    return "mq_runbooks_tokens_" + deployment.replace("-", "_")


def _keyed(key: bytes, token: str) -> str:
    return hmac.new(key, b"token\x00" + token.encode("utf-8"), hashlib.sha256).hexdigest()


def _key(key: bytes | None) -> bytes:
    if key is not None:
        return key
    from mq_runbooks.base.settings import Settings
    from mq_runbooks.kit.signing import signing_key

    return signing_key(Settings.from_environ())


def _read(deployment: str) -> dict[str, dict[str, str]]:
    from mq_runbooks.kit.gateway.variables import read_variable

    stored = read_variable(variable_name(deployment), default=None)
    return dict(stored) if isinstance(stored, dict) else {}


def _write(deployment: str, tokens: Mapping[str, Any]) -> None:
    from mq_runbooks.kit.gateway.variables import write_variable

    write_variable(variable_name(deployment), dict(tokens))


def issue_token(deployment: str, name: str, key: bytes | None = None) -> str:
    """A new token for `name` (replacing any they had); only its HMAC by the signing key `key`
    (default: this process's) is stored. Shown once."""
    if not _NAME.match(name or ""):
        raise UsageError(f"{name!r} is not a person's name (letters, digits, '.', '_', '@', '-'; at most 100)")
    token = "rbt_" + secrets.token_urlsafe(32)
    tokens = _read(deployment)
    tokens[name] = {"hmac": _keyed(_key(key), token), "issued": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    _write(deployment, tokens)
    return token


def revoke_token(deployment: str, name: str) -> None:
    tokens = _read(deployment)
    if name not in tokens:
        raise UsageError(f"{name} has no token (tokens: {', '.join(sorted(tokens)) or 'none'})")
    del tokens[name]
    _write(deployment, tokens)


def list_tokens(deployment: str) -> list[dict[str, str]]:
    """Who holds a token and since when (never the hashes)."""
    return [{"name": name, "issued": entry.get("issued", "")} for name, entry in sorted(_read(deployment).items())]


def token_holder(deployment: str, token: str, key: bytes | None = None) -> str | None:
    """The person `token` was issued to with the signing key `key` (default: this process's), or None.
    An entry not made with the key (e.g. a bare hash written into the variable) matches no token."""
    digest = _keyed(_key(key), token)
    found = None
    for name, entry in _read(deployment).items():
        if hmac.compare_digest(str(entry.get("hmac", "")), digest):
            found = name
    return found


def proof_kind(proof: str) -> str:
    """What the journal keeps of an answer's proof (never the token itself)."""
    if proof == SLACK_PROOF:
        return "slack-signature"
    if proof == PROXY_PROOF:
        return "proxy-identity"
    if proof == OS_USER_PROOF:
        return "os-user"
    return "token" if proof.startswith(TOKEN_PREFIX) else "typed-name"


def os_user() -> str:
    """The login name of the real user this process runs as (its effective uid, not LOGNAME or USER,
    which anyone sets). UsageError for root: root is not a person, and anyone with sudo is root."""
    import pwd

    uid = os.geteuid()
    if uid == 0:
        raise UsageError("root is not a person: answer with a personal token (RUNBOOK_TOKEN or --token-file), "
                         "or run `runbook` as your own user")
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        raise UsageError(f"the OS user {uid} has no name on this machine: answer with a personal token") from None


def unproven_refusal(proof: str, required: str) -> str | None:
    """Why an answer with `proof` (not a token, not Slack's) is refused under RUNBOOK_APPROVAL_PROOF
    `required`, or None if that setting takes it."""
    return kind_refusal(proof_kind(proof), required)


def kind_refusal(kind: str, required: str) -> str | None:
    """Why an answer proven by `kind` (proof_kind) is refused under RUNBOOK_APPROVAL_PROOF `required`,
    or None if that setting takes it."""
    if kind in _TAKEN[required]:
        return None
    given = {"os-user": "the OS user", "typed-name": "a typed name"}.get(kind, f"a proof of kind {kind!r}")
    needed = ("a personal token (RUNBOOK_TOKEN or --token-file; an admin issues one with `runbook tokens issue NAME`)"
              if required == "token" else "the CLI's OS user (`runbook approve|reject` without --as) or a personal token")
    return f"{PROOF_SETTING}={required}: {given} is not taken as proof of who answers; answer with {needed}"


def canonical_person(name: str, people: Iterable[str], email_local_part: bool = False) -> str:
    """`name` as teams.yaml spells that person (matched case-insensitively, and with
    `email_local_part` also on the part before '@': 'Carol@example.com' -> 'carol'), else as given."""
    wanted = {name.strip().lower()} | ({name.strip().lower().partition("@")[0]} if email_local_part else set())
    return next((person for person in people if person.lower() in wanted), name.strip())


def verify_answer(by: str, proof: str, teams: Mapping[str, list[str]],
                  deployment: str | None = None, *, required: str | None = None,
                  key: bytes | None = None) -> tuple[str, str | None]:
    """(who answered, why the answer is refused or None), judged from the answer's proof by its judge.

    With a token, who answered is its holder (a typed `by` that names someone else is refused);
    without one, the name given (typed, or the CLI's OS user), matched case-insensitively to the
    people in teams.yaml, if RUNBOOK_APPROVAL_PROOF (`required`; default: this process's setting)
    takes that proof.
    """
    people = [member for members in teams.values() for member in members]
    if proof in (SLACK_PROOF, PROXY_PROOF):  # the caller (serve) verified Slack's signature / the proxy
        return canonical_person(by, people), None
    if not proof.startswith(TOKEN_PREFIX) and proof not in ("", OS_USER_PROOF):
        return by.strip(), "the answer's proof is not a token (send it with RUNBOOK_TOKEN or --token-file)"
    if required is None or (deployment is None and proof.startswith(TOKEN_PREFIX)):
        from mq_runbooks.base.settings import Settings

        settings = Settings.from_environ()
        required = required or settings.approval_proof
        deployment = deployment or settings.deployment  # inside a run: the deployment it was started from
    if not proof.startswith(TOKEN_PREFIX):
        return canonical_person(by, people), unproven_refusal(proof, required)
    holder = token_holder(deployment, proof[len(TOKEN_PREFIX):], key)
    if holder is None:
        return by.strip() or "unknown", "the token is not valid (revoked, or never issued): ask an admin for one"
    holder = canonical_person(holder, people)
    if by.strip() and by.strip().lower() != holder.lower():
        return holder, f"the token belongs to {holder}, not {by.strip()}"
    return holder, None
