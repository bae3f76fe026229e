"""Runbook `artemis-address-full`: an Artemis address at its max-size-bytes blocks its producers (policy
BLOCK), fails or drops their messages (FAIL, DROP), or pages to disk (PAGE) until the disk fills. The plan
shows the address' size against its limit, its policy, page limits, paging state and disk use; after
approval the runbook changes the address settings as the approver chose (a higher `max_size_bytes`,
another `address_full_policy`, e.g. BLOCK -> PAGE), verifies that the address accepts messages again,
and keeps the settings before as its snapshot:

    observe (address, its effective settings, the broker's disk) -> plan (each setting: now -> new)
    snapshot (the effective settings before) -> apply (addAddressSettings for exactly this address)
    -> verify (read back; the address is no longer full, or pages instead of blocking)
    restore (on failure): remove this runbook's entry; if the effective settings then differ from the
    snapshot, write the snapshot's back as the address' own entry

The change is an address-setting for the exact address name, holding every effective value with the
chosen ones changed, so nothing else about the address changes. It stays until it is undone: nothing
reverts it on a timer. The way back is `runbook restore RUN` (the settings before, from the snapshot,
against what is there now; restore_items), or by hand the snapshot's restore command, a run of this
runbook with the values before.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mq_runbooks.base.clusters import ArtemisCluster
from mq_runbooks.base.errors import ParameterError
from mq_runbooks.integrations.artemis import AddressSettings, AddressState, ArtemisManagement, ArtemisNotFound
from mq_runbooks.kit import journal
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.plans import PlanTable
from mq_runbooks.kit.records import Restore, Snapshot, Verification
from mq_runbooks.kit.restore_plan import RestoreItem

__all__ = ["AddressFullParameters", "artemis_address_full", "dry_run"]

RUNBOOK_ID = "artemis-address-full"
Policy = Literal["PAGE", "BLOCK", "FAIL", "DROP"]
# Artemis' JSON names of the settings this runbook changes, by parameter
SETTING_NAMES = {"max_size_bytes": "maxSizeBytes", "address_full_policy": "addressFullMessagePolicy"}
SHOWN_NAMES = {"max_size_bytes": "max-size-bytes", "address_full_policy": "address-full-policy"}


class AddressFullParameters(BaseModel):
    """Parameters of artemis-address-full: the address and the settings the approver chose."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(description="an Artemis cluster named in clusters.yaml, e.g. primary")
    address: str = Field(min_length=1, description="the address that is full")
    max_size_bytes: int | None = Field(None, ge=-1, description=(
        "the new max-size-bytes (-1: only global-max-size limits it)"))
    address_full_policy: Policy | None = Field(None, description="the new address-full-policy: PAGE, BLOCK, FAIL or DROP")
    verify_window_s: float = Field(3, ge=0, le=300, description="seconds to watch the address after the change")

    @model_validator(mode="after")
    def _some_change(self) -> AddressFullParameters:
        if self.max_size_bytes is None and self.address_full_policy is None:
            raise ValueError("give max_size_bytes and/or address_full_policy: the settings to change")
        if self.max_size_bytes == 0:
            raise ValueError("max_size_bytes 0 would make the address full at once: give a size in bytes, or -1")
        return self

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SETTING_NAMES if getattr(self, name) is not None}


@dataclass(frozen=True)
class AddressFullPlan(PlanTable):
    cluster: str
    address: AddressState
    settings: AddressSettings
    changes: tuple[tuple[str, Any, Any], ...]  # (parameter, now, new), only those that differ
    disk_store_usage: float
    max_disk_usage: int
    address_memory_usage: int
    global_max_size: int

    COLUMNS = ("setting", "now", "new")

    def columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def rows(self) -> list[tuple]:
        return [(SHOWN_NAMES[name], now, new) for name, now, new in self.changes]

    @property
    def full(self) -> bool:
        return self.settings.max_size_bytes > 0 and self.address.size_bytes >= self.settings.max_size_bytes

    def state(self) -> str:
        limit = "no limit" if self.settings.max_size_bytes < 0 else f"{self.settings.max_size_bytes:,} bytes"
        words = f"address {self.address.name}: {self.address.size_bytes:,} bytes of {limit}"
        if self.settings.max_size_bytes > 0:
            words += f" ({self.address.limit_percent}%)"
        words += f", {self.address.number_of_messages:,} message(s), policy {self.settings.address_full_policy}"
        if self.full and self.settings.address_full_policy == "BLOCK":
            words += ": producers are blocked"
        elif self.full:
            words += f": full ({self.settings.address_full_policy})"
        if self.address.paging:
            words += f"; paging, {self.address.number_of_pages} page file(s)"
        return words

    def summary(self) -> str:
        if not self.changes:
            return f"{self.state()}; the settings already are as asked"
        change = ", ".join(f"{SHOWN_NAMES[n]} {now} -> {new}" for n, now, new in self.changes)
        return f"{self.state()}; change {change}"

    def warnings(self) -> list[str]:
        found = [f"disk: the journal's volume is {self.disk_store_usage:.0%} full; Artemis blocks every producer "
                 f"at {self.max_disk_usage}%" + (" (paging writes to it)" if self._to_page() else "")]
        if self.settings.page_limit_bytes > 0 or self.settings.page_limit_messages > 0:
            found.append(f"page limits: {self.settings.page_limit_bytes} bytes, {self.settings.page_limit_messages} "
                         "message(s) (past them Artemis drops or fails, per page-full-policy)")
        return found

    def _to_page(self) -> bool:
        return any(n == "address_full_policy" and new == "PAGE" for n, _, new in self.changes)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data.update({"address": self.address.name, "size_bytes": self.address.size_bytes, "paging": self.address.paging,
                     "before": {SHOWN_NAMES[n]: getattr(self.settings, n) for n in SETTING_NAMES},
                     "disk_store_usage": self.disk_store_usage, "max_disk_usage": self.max_disk_usage})
        return data


def observe_address(cluster: ArtemisCluster, params: AddressFullParameters) -> AddressFullPlan:
    with ArtemisManagement.from_cluster(cluster) as artemis:
        try:
            address = artemis.address(params.address)
        except ArtemisNotFound:
            raise ParameterError(RUNBOOK_ID, [("address", f"{params.address!r} is not an address of artemis "
                                                          f"cluster {cluster.name!r}")]) from None
        settings = artemis.address_settings(params.address)
        broker = artemis.broker()
    changes = tuple((name, getattr(settings, name), new) for name, new in params.changes().items()
                    if getattr(settings, name) != new)
    return AddressFullPlan(cluster=cluster.name, address=address, settings=settings, changes=changes,
                           disk_store_usage=broker.disk_store_usage, max_disk_usage=broker.max_disk_usage,
                           address_memory_usage=broker.address_memory_usage, global_max_size=broker.global_max_size)


def apply_settings(cluster: ArtemisCluster, address: str, before: dict[str, Any], changes: dict[str, Any]) -> dict:
    """The address' own address-setting: every effective value as it was, the chosen ones changed."""
    settings = {**before, **{SETTING_NAMES[name]: value for name, value in changes.items()}}
    with ArtemisManagement.from_cluster(cluster) as artemis:
        artemis.set_address_settings(address, settings)
        after = artemis.address_settings(address)
    return {SHOWN_NAMES[name]: getattr(after, name) for name in SETTING_NAMES}


class AddressFull(RunbookSteps[AddressFullParameters, AddressFullPlan]):
    id = RUNBOOK_ID

    def target(self, params: AddressFullParameters) -> str:
        return f"{params.cluster}/{params.address}"

    def observe(self, env: Env, params: AddressFullParameters) -> AddressFullPlan:
        plan = observe_address(env.clusters.artemis_cluster(params.cluster), params)
        if isinstance(env, Run):
            env.observed(plan.state(), size_bytes=plan.address.size_bytes, paging=plan.address.paging,
                         pages=plan.address.number_of_pages, disk_store_usage=plan.disk_store_usage)
        return plan

    def snapshot(self, run: Run, params: AddressFullParameters, plan: AddressFullPlan) -> Snapshot:
        before = {SHOWN_NAMES[n]: getattr(plan.settings, n) for n in SETTING_NAMES}
        back = " ".join(f"-p {name}={getattr(plan.settings, name)}" for name, _, _ in plan.changes)
        return Snapshot(
            summary=f"settings of {params.address} before: " + ", ".join(f"{k} {v}" for k, v in before.items()),
            csv="setting,value\n" + "".join(f"{k},{v}\n" for k, v in before.items()),
            restore_command=f"runbook run {RUNBOOK_ID} -p cluster={params.cluster} -p address={params.address} {back}",
            data={"address": params.address, "effective_before": plan.settings.raw, "before": before})

    def act(self, run: Run, params: AddressFullParameters, plan: AddressFullPlan) -> dict[str, Any]:
        cluster = run.clusters.artemis_cluster(params.cluster)
        changes = {name: new for name, _, new in plan.changes}
        return run.step("address-settings", lambda: apply_settings(cluster, params.address, plan.settings.raw, changes),
                        lambda after: f"address-settings of {params.address} now: "
                                      + ", ".join(f"{k} {v}" for k, v in after.items()),
                        lambda after: {"after": after, "changed": {SHOWN_NAMES[n]: v for n, v in changes.items()}})

    def verify(self, run: Run, params: AddressFullParameters, plan: AddressFullPlan, result: Any) -> Verification:
        """The settings read back are the chosen ones, and the address accepts messages: below its limit,
        or paging (not blocking, failing or dropping) when full."""
        cluster = run.clusters.artemis_cluster(params.cluster)
        with ArtemisManagement.from_cluster(cluster) as artemis:
            routed_before = artemis.read(artemis.address_mbean(params.address), "RoutedMessageCount")["RoutedMessageCount"]
            time.sleep(params.verify_window_s)
            settings = artemis.address_settings(params.address)
            address = artemis.address(params.address)
            routed_after = artemis.read(artemis.address_mbean(params.address), "RoutedMessageCount")["RoutedMessageCount"]
        wrong = [f"{SHOWN_NAMES[n]} is {getattr(settings, n)}, not {new}" for n, _, new in plan.changes
                 if getattr(settings, n) != new]
        full = settings.max_size_bytes > 0 and address.size_bytes >= settings.max_size_bytes
        data = {"size_bytes": address.size_bytes, "max_size_bytes": settings.max_size_bytes,
                "address_full_policy": settings.address_full_policy, "paging": address.paging,
                "routed_in_window": routed_after - routed_before, "window_s": params.verify_window_s}
        if wrong:
            return Verification(ok=False, summary=f"the settings did not take: {'; '.join(wrong)}", data=data)
        if full and settings.address_full_policy != "PAGE":
            return Verification(ok=False, summary=f"{params.address} is still full ({address.size_bytes:,} of "
                                f"{settings.max_size_bytes:,} bytes, {settings.address_full_policy}): producers are "
                                "still refused", data=data)
        accepting = "pages what does not fit" if full else f"{address.size_bytes:,} bytes of " + (
            f"{settings.max_size_bytes:,}" if settings.max_size_bytes > 0 else "no limit")
        return Verification(summary=f"{params.address} accepts messages ({accepting}); {routed_after - routed_before} "
                                    f"routed in {params.verify_window_s:g}s", data=data)

    def restore(self, run: Run, params: AddressFullParameters, plan: AddressFullPlan | None,
                snapshot: Snapshot) -> Restore:
        """The settings before (the snapshot's `effective_before`), after a failure or in a restore run."""
        cluster = run.clusters.artemis_cluster(params.cluster)
        before = snapshot.data.get("effective_before") or (plan.settings.raw if plan is not None else {})
        with ArtemisManagement.from_cluster(cluster) as artemis:
            artemis.remove_address_settings(params.address)
            now = artemis.address_settings(params.address)
            rewritten = any(now.raw.get(SETTING_NAMES[n]) != before.get(SETTING_NAMES[n]) for n in SETTING_NAMES)
            if rewritten:  # it had an entry of its own before: put its values back
                artemis.set_address_settings(params.address, before)
                now = artemis.address_settings(params.address)
        restored = ", ".join(f"{SHOWN_NAMES[n]} {getattr(now, n)}" for n in SETTING_NAMES)
        return Restore(summary=f"settings of {params.address} restored: {restored}", restored=True,
                       restore_command=snapshot.restore_command, data={"rewritten": rewritten})

    def restore_items(self, env: Env, params: AddressFullParameters, snapshot: Snapshot,
                      original: list[journal.Entry]) -> list[RestoreItem]:
        """Each setting this runbook changes: before the run (the snapshot), now, and what the run set
        (its address-settings step's read-back)."""
        set_by_run = next((e.data.get("after") or {} for e in reversed(original)
                           if e.kind == "action" and e.data.get("step") == "address-settings"), {})
        with env.artemis(params.cluster) as artemis:
            now = artemis.address_settings(params.address)
        return [RestoreItem(f"{SHOWN_NAMES[name]} of {params.address}", saved=snapshot.data["before"][SHOWN_NAMES[name]],
                            now=getattr(now, name), left=set_by_run.get(SHOWN_NAMES[name]))
                for name in SETTING_NAMES]

    def outcome(self, params: AddressFullParameters, plan: AddressFullPlan, result: Any) -> str:
        change = ", ".join(f"{SHOWN_NAMES[n]} {now} -> {new}" for n, now, new in plan.changes)
        return f"done: {params.address}: {change}; it accepts messages again (verified)"


STEPS = AddressFull()
dry_run = STEPS.dry_run


artemis_address_full = runbook_flow(
    STEPS, AddressFullParameters,
    "Unblock a full Artemis address by changing its limit or its address-full-policy.")
