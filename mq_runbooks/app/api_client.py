"""The CLI's side of serve's API (app/api_routes.py): with RUNBOOK_SERVER set, `runbook run`,
`approve`, `reject` and `status` go through `runbook serve` with the person's token, and the CLI
needs no Prefect credential (people never hold it; see the README, 'Security').

    with ServeClient("https://runbooks.example.com", token) as serve:
        serve.call("POST", "/runs/d768e8c2/approve", {"comment": "billing is stopped"})
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from mq_runbooks.base.errors import NotFoundError, RunbookError, UsageError
from mq_runbooks.base.settings import Settings

TIMEOUT_S = 90.0  # an answer waits for the run's verdict (up to 60 s) before serve replies


def read_token(settings: Settings, token_file: Path | None = None) -> str:
    """The personal token: from `token_file` (--token-file), RUNBOOK_TOKEN or RUNBOOK_TOKEN_FILE ("" if
    none). A token file others may read is refused: the token would be theirs too."""
    if token_file is None and settings.token is not None:
        return settings.token.get_secret_value()
    path = token_file or settings.token_file
    if path is None:
        return ""
    try:
        if path.stat().st_mode & 0o077:
            raise UsageError(f"the token file {path} may be read by others: make it yours alone (chmod 600 {path})")
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"the token file {path} cannot be read: {exc.strerror}") from None
    if not token:
        raise UsageError(f"the token file {path} is empty")
    return token


class ServeClient:
    def __init__(self, server_url: str, token: str) -> None:
        if not token:
            raise UsageError("RUNBOOK_SERVER is set: prove who you are to it with your personal token "
                             "(RUNBOOK_TOKEN, RUNBOOK_TOKEN_FILE or --token-file; an admin issues one)")
        self.url = server_url.rstrip("/")
        self._client = httpx.Client(base_url=f"{self.url}/api/v1", timeout=TIMEOUT_S,
                                    headers={"Authorization": f"Bearer {token}"})

    def __enter__(self) -> "ServeClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer; UsageError for what serve refused as bad input or not allowed (exit 2),
        NotFoundError for what does not exist, RunbookError when serve or Prefect cannot answer."""
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise RunbookError(f"cannot reach runbook serve at {self.url} (RUNBOOK_SERVER): "
                               f"{type(exc).__name__}: {exc}") from None
        try:
            document = response.json()
        except ValueError:
            document = {}
        reason = document.get("error") if isinstance(document, dict) else None
        if response.status_code == 401:
            raise UsageError(f"runbook serve does not know who you are: {reason or 'no reason given'}")
        if response.status_code == 403:
            raise UsageError(f"refused: {reason}")
        if response.status_code == 404:
            raise NotFoundError(reason or f"not found: {path}")
        if 400 <= response.status_code < 500:
            raise UsageError(reason or f"runbook serve refused the request (HTTP {response.status_code})")
        if response.status_code >= 500:
            raise RunbookError(f"runbook serve could not answer (HTTP {response.status_code}): {reason or ''}".rstrip(": "))
        return document
