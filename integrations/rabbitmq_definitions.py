"""RabbitMQ definitions (exchanges, queues, bindings, policies; users when asked) copied from one
cluster to another through the management API, and read back to prove they arrived.

    with RabbitManagement.from_cluster(primary) as source, RabbitManagement.from_cluster(standby) as target:
        definitions = export_definitions(source, vhosts=["/"])          # GET /api/definitions
        changes = compare(definitions, read_definitions(target, ["/"]))  # what an import would create
        import_definitions(target, definitions)                          # POST /api/definitions
        assert verify_definitions(target, definitions) == []             # per-kind GETs on the target

A definition is an `Item`: its kind, vhost, identity and the properties that must be equal on both
sides. Users carry their password hash only inside `Definitions.users_document`, which is sent to
the target and never rendered: `Item`s, plans and digests name users and their tags only.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from mq_runbooks.base.errors import BrokerError, PreconditionError
from mq_runbooks.integrations.rabbitmq import RabbitManagement

__all__ = ["Change", "Definitions", "Item", "compare", "export_definitions", "import_definitions",
           "read_definitions", "verify_definitions"]

KINDS = ("exchange", "queue", "binding", "policy")


@dataclass(frozen=True, order=True)
class Item:
    """One definition: `key` identifies it within its kind and vhost; `properties` must match."""

    kind: str
    vhost: str
    key: tuple[str, ...]
    properties: str  # canonical JSON, so items compare and hash as values

    @property
    def label(self) -> str:
        """'queue orders', 'binding orders-x -> queue orders (eu.#)', 'user alice'."""
        if self.kind == "binding":
            source, destination_type, destination, routing_key, _ = self.key
            return f"binding {source} -> {destination_type} {destination} ({routing_key or 'no key'})"
        return f"{self.kind} {self.key[0]}"

    def shown(self) -> dict[str, Any]:
        return {"kind": self.kind, "vhost": self.vhost, "name": self.label.split(" ", 1)[1],
                **json.loads(self.properties)}


@dataclass(frozen=True)
class Definitions:
    """What was read from one cluster for some vhosts (and its users, when asked)."""

    vhosts: tuple[str, ...]
    items: tuple[Item, ...]
    permissions: tuple[dict[str, Any], ...] = ()
    users_document: tuple[dict[str, Any], ...] = field(default=(), repr=False)  # holds password hashes

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(sorted(user["name"] for user in self.users_document))

    def of_kind(self, kind: str) -> list[Item]:
        return [item for item in self.items if item.kind == kind]

    def counts(self) -> dict[str, int]:
        counted = {kind: len(self.of_kind(kind)) for kind in KINDS}
        return {**counted, "user": len(self.users_document)}

    def digest(self) -> str:
        """Hash of the definition set (identities and properties; users by name and tags only)."""
        users = sorted((u["name"], tuple(sorted(u.get("tags") or []))) for u in self.users_document)
        text = json.dumps([list(self.vhosts), [list(_astuple(i)) for i in sorted(self.items)], users], default=str)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Change:
    """What importing `item` would do on the target: create it, update it (policies), or nothing."""

    item: Item
    action: str  # "create" | "update" | "present"
    target_properties: str | None = None


def _astuple(item: Item) -> tuple[Any, ...]:
    return item.kind, item.vhost, item.key, item.properties


def _canonical(properties: dict[str, Any]) -> str:
    return json.dumps(properties, sort_keys=True, separators=(",", ":"))


# --- API documents -> items (the export and the per-kind endpoints use the same field names) -------

def _exchange(doc: dict[str, Any]) -> Item:
    props = {"type": doc["type"], "durable": doc.get("durable", True), "auto_delete": doc.get("auto_delete", False),
             "internal": doc.get("internal", False), "arguments": doc.get("arguments") or {}}
    return Item("exchange", doc["vhost"], (doc["name"],), _canonical(props))


def _queue(doc: dict[str, Any]) -> Item:
    props = {"durable": doc.get("durable", True), "auto_delete": doc.get("auto_delete", False),
             "arguments": doc.get("arguments") or {}}
    return Item("queue", doc["vhost"], (doc["name"],), _canonical(props))


def _binding(doc: dict[str, Any]) -> Item:
    arguments = _canonical(doc.get("arguments") or {})
    key = (doc["source"], doc["destination_type"], doc["destination"], doc.get("routing_key", ""), arguments)
    return Item("binding", doc["vhost"], key, _canonical({}))


def _policy(doc: dict[str, Any]) -> Item:
    props = {"pattern": doc["pattern"], "apply-to": doc.get("apply-to", "all"),
             "definition": doc.get("definition") or {}, "priority": doc.get("priority", 0)}
    return Item("policy", doc["vhost"], (doc["name"],), _canonical(props))


_PARSERS = {"exchanges": _exchange, "queues": _queue, "bindings": _binding, "policies": _policy}


def _is_user_defined(section: str, doc: dict[str, Any]) -> bool:
    """The default exchange, amq.* exchanges and the default exchange's implicit bindings exist on
    every vhost and are not definitions to copy."""
    if section == "exchanges":
        return doc["name"] != "" and not doc["name"].startswith("amq.")
    if section == "bindings":
        return doc["source"] != ""
    if section == "queues":
        return not doc.get("exclusive", False)
    return True


# --- export, read back, compare, import ----------------------------------------------------------

def export_definitions(rabbit: RabbitManagement, vhosts: list[str], *, include_users: bool = False) -> Definitions:
    """The definitions of `vhosts` on the cluster (GET /api/definitions), users only if asked.

    BrokerError naming a vhost that does not exist there.
    """
    document = rabbit.get_json("/api/definitions")
    known = {v["name"] for v in document.get("vhosts", [])}
    missing = [v for v in vhosts if v not in known]
    if missing:
        raise BrokerError(f"{rabbit.where()}: vhost(s) {', '.join(map(repr, missing))} do not exist "
                          f"(vhosts there: {', '.join(sorted(known))})")
    wanted = set(vhosts)
    items = [parse(doc) for section, parse in _PARSERS.items() for doc in document.get(section, [])
             if doc.get("vhost") in wanted and _is_user_defined(section, doc)]
    permissions = [p for p in document.get("permissions", []) if p["vhost"] in wanted]
    users: list[dict[str, Any]] = []
    if include_users:
        users = [u for u in document.get("users", []) if any(p["user"] == u["name"] for p in permissions)]
    return Definitions(tuple(vhosts), tuple(sorted(items)), tuple(permissions), tuple(users))


def read_definitions(rabbit: RabbitManagement, vhosts: list[str]) -> list[Item]:
    """What the cluster has now in `vhosts`, read kind by kind (vhosts it lacks have nothing)."""
    existing = {v["name"] for v in rabbit.get_json("/api/vhosts")}
    items: list[Item] = []
    for vhost in vhosts:
        if vhost not in existing:
            continue
        for section, parse in _PARSERS.items():
            docs = rabbit.get_json(f"/api/{section}/{quote(vhost, safe='')}")
            items += [parse(doc) for doc in docs if _is_user_defined(section, doc)]
    return sorted(items)


def compare(definitions: Definitions, target_items: list[Item]) -> list[Change]:
    """What importing `definitions` would do on a target that has `target_items`.

    PreconditionError listing every exchange or queue that exists on the target with other
    properties: RabbitMQ refuses to redeclare those, and deleting them would drop messages.
    """
    on_target = {(i.kind, i.vhost, i.key): i for i in target_items}
    changes, conflicts = [], []
    for item in definitions.items:
        there = on_target.get((item.kind, item.vhost, item.key))
        if there is None:
            changes.append(Change(item, "create"))
        elif there.properties == item.properties:
            changes.append(Change(item, "present"))
        elif item.kind == "policy":
            changes.append(Change(item, "update", there.properties))
        else:
            conflicts.append(f"{item.label} in vhost {item.vhost!r}: source {item.properties}, "
                             f"target {there.properties}")
    if conflicts:
        raise PreconditionError("the target already has definitions that differ from the source (delete or "
                                "rename them there first):\n  " + "\n  ".join(conflicts))
    return changes


def import_definitions(rabbit: RabbitManagement, definitions: Definitions) -> None:
    """POST the definitions to the cluster: vhosts are created, and permissions copied for users that
    exist there (or are imported), so the same users can reach the new vhosts."""
    users_there = {u["name"] for u in rabbit.get_json("/api/users")} | set(definitions.users)
    body: dict[str, Any] = {
        "vhosts": [{"name": vhost} for vhost in definitions.vhosts],
        "permissions": [p for p in definitions.permissions if p["user"] in users_there],
        "users": list(definitions.users_document),
    }
    for section, kind in (("exchanges", "exchange"), ("queues", "queue"), ("bindings", "binding"),
                          ("policies", "policy")):
        body[section] = [_document(item) for item in definitions.of_kind(kind)]
    rabbit.send("POST", "/api/definitions", body)


def _document(item: Item) -> dict[str, Any]:
    """The import document of one item (the shape GET /api/definitions gives)."""
    props = json.loads(item.properties)
    if item.kind == "binding":
        source, destination_type, destination, routing_key, arguments = item.key
        return {"vhost": item.vhost, "source": source, "destination_type": destination_type,
                "destination": destination, "routing_key": routing_key, "arguments": json.loads(arguments)}
    return {"vhost": item.vhost, "name": item.key[0], **props}


def verify_definitions(rabbit: RabbitManagement, definitions: Definitions) -> list[str]:
    """Every definition of the set that the cluster lacks or holds differently (empty: all there)."""
    there = {(i.kind, i.vhost, i.key): i for i in read_definitions(rabbit, list(definitions.vhosts))}
    problems = []
    for item in definitions.items:
        found = there.get((item.kind, item.vhost, item.key))
        if found is None:
            problems.append(f"{item.label} in vhost {item.vhost!r} is missing")
        elif found.properties != item.properties:
            problems.append(f"{item.label} in vhost {item.vhost!r} differs: {found.properties}")
    users_there = {u["name"] for u in rabbit.get_json("/api/users")}
    problems += [f"user {name} is missing" for name in definitions.users if name not in users_there]
    return problems
