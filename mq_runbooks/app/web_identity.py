"""Who is asking, on the review pages: the identity an authenticating proxy in front of `runbook serve`
asserts (oauth2-proxy's X-Forwarded-Email / X-Forwarded-User), believed only when the request comes
straight from one of RUNBOOK_TRUSTED_PROXIES; and whether a write comes from our own pages (the
same-origin check that stops a form posted from another site).

A typed name proves nothing: with no trusted proxy configured, page writes are refused.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from urllib.parse import urlsplit

from mq_runbooks.base.settings import Settings
from mq_runbooks.kit.identity import canonical_person
from mq_runbooks.kit.teams import load_teams

MAX_IDENTITY_CHARS = 256


class IdentityRefused(Exception):
    """The request may not do what it asked; the message says why (shown to the person, 403)."""


@dataclass(frozen=True)
class ProxyIdentity:
    """A person as a trusted proxy asserted them."""

    name: str       # as teams.yaml spells them when they are listed there, else as asserted
    asserted: str   # the header's value
    header: str     # which header carried it
    proxy: str      # the address of the proxy the request came from

    def proof(self) -> dict[str, str]:
        """What the postmortem's front matter keeps as the proof of this identity."""
        return {"kind": "proxy-header", "header": self.header, "value": self.asserted, "proxy": self.proxy}


def people_of_teams(settings: Settings) -> list[str]:
    """Everyone teams.yaml lists, each once."""
    return list(dict.fromkeys(member for members in load_teams(settings.teams).values() for member in members))


def proxy_identity(settings: Settings, headers: Mapping[str, str], peer: str | None) -> ProxyIdentity:
    """The identity asserted by a trusted proxy; IdentityRefused saying why there is none."""
    if not settings.trusted_proxies:
        raise IdentityRefused(
            "this needs a proven identity, and none can be: no authenticating proxy is configured "
            "(set RUNBOOK_TRUSTED_PROXIES to its address and put runbook serve behind it; see the README, 'Security')")
    try:
        address = ip_address(peer or "")
    except ValueError:
        address = None
    if address is None or not any(address in network for network in settings.trusted_proxies):
        raise IdentityRefused(f"this needs a proven identity: the request came from {peer or 'an unknown address'}, "
                              f"not through a trusted authenticating proxy (RUNBOOK_TRUSTED_PROXIES)")
    for header in settings.identity_headers:
        value = (headers.get(header) or "").strip()
        if value:
            if len(value) > MAX_IDENTITY_CHARS or not value.isprintable():
                raise IdentityRefused(f"the proxy's {header} header is not a name or e-mail address")
            name = canonical_person(value, people_of_teams(settings), email_local_part=True)
            return ProxyIdentity(name, value, header, str(address))
    raise IdentityRefused(f"this needs a proven identity: the proxy sent none of {', '.join(settings.identity_headers)}")


def require_same_origin(settings: Settings, headers: Mapping[str, str]) -> None:
    """IdentityRefused unless the request's Origin (or, lacking it, Referer) is our own: the origin
    of RUNBOOK_PUBLIC_URL, or the Host the request was sent to."""
    allowed = {f"{scheme}://{headers.get('host', '')}".lower() for scheme in ("http", "https")}
    if settings.public_url:
        public = urlsplit(settings.public_url)
        allowed.add(f"{public.scheme}://{public.netloc}".lower())
    source = headers.get("origin") or headers.get("referer") or ""
    parts = urlsplit(source) if source and source != "null" else None
    origin = f"{parts.scheme}://{parts.netloc}".lower() if parts and parts.scheme else ""
    if not origin:
        raise IdentityRefused("a page write must come from the review page itself (no Origin or Referer header)")
    if origin not in allowed:
        raise IdentityRefused(f"a page write must come from the review page itself, not from {origin}")
