"""A runbook over a JSON file instead of a broker, to test the driver's decisions alone: it sets
`value` in the file at `path`; `fail` makes a chosen moment fail (before any change, after the change,
in verify), `repeat` applies its one step twice (the fence must apply it once)."""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict

from mq_runbooks.base.errors import BrokerError
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, drive
from mq_runbooks.kit.plans import PlanTable
from mq_runbooks.kit.records import Restore, Snapshot, Verification


class FileParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    value: str
    fail: Literal["none", "before-change", "after-change", "verify", "restore"] = "none"
    repeat: bool = False
    snapshot: bool = True


@dataclass(frozen=True)
class FilePlan(PlanTable):
    path: str
    current: str | None
    wanted: str
    exists: bool

    def columns(self): return ("file", "now", "after")
    def rows(self): return [(self.path, self.current, self.wanted)] if self.exists and self.current != self.wanted else []
    def summary(self): return f"{self.path}: {self.current} -> {self.wanted}"
    def missing_targets(self): return [] if self.exists else [f"file {self.path}"]


def read(path: str) -> str | None:
    return json.loads(Path(path).read_text()).get("value")


def write(path: str, value: str | None) -> None:
    Path(path).write_text(json.dumps({"value": value, "writes": writes(path) + 1}))


def writes(path: str) -> int:
    return json.loads(Path(path).read_text()).get("writes", 0)


class FileSwitch(RunbookSteps[FileParameters, FilePlan]):
    id = "kit-file-switch"
    verify_delay_s = 0.1

    def target(self, params): return params.path

    def observe(self, env: Env, params: FileParameters) -> FilePlan:
        exists = Path(params.path).is_file()
        return FilePlan(params.path, read(params.path) if exists else None, params.value, exists)

    def snapshot(self, run, params, plan):
        if params.snapshot:
            return Snapshot(summary=f"{plan.path} was {plan.current}", data={"value": plan.current},
                            restore_command=f"runbook run kit-file-switch -p path={plan.path} -p value={plan.current}")
        return None

    def act(self, run: Run, params: FileParameters, plan: FilePlan) -> None:
        if params.fail == "before-change":
            raise BrokerError("injected: failed before the change")
        for _ in range(2 if params.repeat else 1):
            run.step("write", lambda: write(plan.path, plan.wanted), f"{plan.path} set to {plan.wanted}")
        if params.fail in ("after-change", "restore"):  # "restore": then the restore fails too
            raise BrokerError("injected: failed after the change")

    def verify(self, run, params, plan, result) -> Verification:
        now = read(plan.path)
        return Verification(ok=now == plan.wanted and params.fail != "verify", summary=f"{plan.path} is {now}")

    def restore(self, run, params, plan, snapshot: Snapshot) -> Restore:
        if params.fail == "restore":
            raise BrokerError("injected: the restore failed")
        write(plan.path, snapshot.data["value"])
        return Restore(summary=f"{plan.path} back to {snapshot.data['value']}", restored=True)


STEPS = FileSwitch()
dry_run = STEPS.dry_run


@flow(name="kit-file-switch", persist_result=False)
def kit_file_switch(params: FileParameters, requested_by: str = "unknown", trigger: dict | None = None):
    """Set a value in a JSON file (tests of the driver)."""
    return drive(STEPS, params, requested_by, trigger)
