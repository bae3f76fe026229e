"""Who answered a gate, as proven as the answer allows: personal CLI tokens, and the one check the
gate makes of every answer (`verify_answer`), inside the run, whichever path it came by.

Tokens are issued and revoked by an admin (`runbook tokens issue|revoke|list`: whoever may write the
Prefect server's variables). Only their SHA-256 is kept, in one Prefect Variable per deployment name
(`mq_runbooks_tokens_<RUNBOOK_DEPLOYMENT>`), so every machine that reaches the server checks them the
same way and no file holds them. A person presents theirs with RUNBOOK_TOKEN or `--token`; it travels
in the Approval's `proof` field and the gate looks it up.

    proof ""             the name typed (`--as`, the Prefect UI's "by"): not proven
    proof "os-user"      the OS user the CLI runs as (`getpass.getuser()`): as proven as that machine's logins
    proof "slack"        a Slack user id from a request whose signature `runbook serve` verified
    proof "token:<t>"    the person the token was issued to; a wrong or revoked token is refused

A team chooses the least proof its gates take with RUNBOOK_APPROVAL_PROOF (Settings.approval_proof):
`typed` takes all four (the default, so an existing set-up and the demo keep working), `os-user`
refuses a typed name, `token` refuses a typed name and the OS user. Slack's signature and a valid
token are always taken. The gate reads the setting of the process the run executes in.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from mq_runbooks.base.errors import UsageError

TOKEN_PREFIX = "token:"
SLACK_PROOF = "slack"
OS_USER_PROOF = "os-user"
PROOF_SETTING = "RUNBOOK_APPROVAL_PROOF"
# What each RUNBOOK_APPROVAL_PROOF takes besides Slack's signature and a token.
_TAKEN = {"typed": {"", OS_USER_PROOF}, "os-user": {OS_USER_PROOF}, "token": set()}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


def variable_name(deployment: str) -> str:
    return "mq_runbooks_tokens_" + deployment.replace("-", "_")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _read(deployment: str) -> dict[str, dict[str, str]]:
    from prefect.variables import Variable

    stored = Variable.get(variable_name(deployment), default=None)
    return dict(stored) if isinstance(stored, dict) else {}


def _write(deployment: str, tokens: Mapping[str, Any]) -> None:
    from prefect.variables import Variable

    Variable.set(variable_name(deployment), dict(tokens), overwrite=True)


def issue_token(deployment: str, name: str) -> str:
    """A new token for `name` (replacing any they had); only its hash is stored. Shown once."""
    if not _NAME.match(name or ""):
        raise UsageError(f"{name!r} is not a person's name (letters, digits, '.', '_', '@', '-'; at most 100)")
    token = "rbt_" + secrets.token_urlsafe(32)
    tokens = _read(deployment)
    tokens[name] = {"sha256": _digest(token), "issued": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
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


def token_holder(deployment: str, token: str) -> str | None:
    """The person `token` was issued to, or None."""
    digest = _digest(token)
    found = None
    for name, entry in _read(deployment).items():
        if hmac.compare_digest(str(entry.get("sha256", "")), digest):
            found = name
    return found


def proof_kind(proof: str) -> str:
    """What the journal keeps of an answer's proof (never the token itself)."""
    if proof == SLACK_PROOF:
        return "slack-signature"
    if proof == OS_USER_PROOF:
        return "os-user"
    return "token" if proof.startswith(TOKEN_PREFIX) else "typed-name"


def os_user() -> str:
    """The login name of the user this process runs as."""
    import getpass

    return getpass.getuser()


def unproven_refusal(proof: str, required: str) -> str | None:
    """Why an answer with `proof` (not a token, not Slack's) is refused under RUNBOOK_APPROVAL_PROOF
    `required`, or None if that setting takes it."""
    if proof in _TAKEN[required]:
        return None
    given = "the OS user" if proof == OS_USER_PROOF else "a typed name"
    needed = ("a personal token (--token or RUNBOOK_TOKEN; an admin issues one with `runbook tokens issue NAME`)"
              if required == "token" else "the CLI's OS user (`runbook approve|reject` without --as) or a personal token")
    return f"{PROOF_SETTING}={required}: {given} is not taken as proof of who answers; answer with {needed}"


def canonical_person(name: str, people: Iterable[str], email_local_part: bool = False) -> str:
    """`name` as teams.yaml spells that person (matched case-insensitively, and with
    `email_local_part` also on the part before '@': 'Carol@example.com' -> 'carol'), else as given."""
    wanted = {name.strip().lower()} | ({name.strip().lower().partition("@")[0]} if email_local_part else set())
    return next((person for person in people if person.lower() in wanted), name.strip())


def verify_answer(by: str, proof: str, teams: Mapping[str, list[str]],
                  deployment: str | None = None, *, required: str | None = None) -> tuple[str, str | None]:
    """(who answered, why the answer is refused or None), judged from the answer's proof.

    With a token, who answered is its holder (a typed `by` that names someone else is refused);
    without one, the name given (typed, or the CLI's OS user), matched case-insensitively to the
    people in teams.yaml, if RUNBOOK_APPROVAL_PROOF (`required`; default: this process's setting)
    takes that proof.
    """
    people = [member for members in teams.values() for member in members]
    if proof == SLACK_PROOF:
        return canonical_person(by, people), None
    if not proof.startswith(TOKEN_PREFIX) and proof not in ("", OS_USER_PROOF):
        return by.strip(), "the answer's proof is not a token (send it with RUNBOOK_TOKEN or --token)"
    if required is None or (deployment is None and proof.startswith(TOKEN_PREFIX)):
        from mq_runbooks.base.settings import Settings

        settings = Settings.from_environ()
        required = required or settings.approval_proof
        deployment = deployment or settings.deployment  # inside a run: the deployment it was started from
    if not proof.startswith(TOKEN_PREFIX):
        return canonical_person(by, people), unproven_refusal(proof, required)
    holder = token_holder(deployment, proof[len(TOKEN_PREFIX):])
    if holder is None:
        return by.strip() or "unknown", "the token is not valid (revoked, or never issued): ask an admin for one"
    holder = canonical_person(holder, people)
    if by.strip() and by.strip().lower() != holder.lower():
        return holder, f"the token belongs to {holder}, not {by.strip()}"
    return holder, None
