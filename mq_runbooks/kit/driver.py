"""The driver every runbook runs through. A runbook supplies its own logic as a `RunbookSteps`
subclass (observe/plan, act, verify, and where they apply snapshot, restore and a precondition to wait
for after approval); the driver does everything else, the same way for every runbook:

    start (journal: parameters, requester, trigger); its moment is the clock every plan of the run reads
    lock the target (from the catalog's lock template), held until the run ends
    observe -> plan (journal: the typed plan)
      missing targets -> refused      nothing to change -> unchanged       a refusal -> refused
    gate (the plan, its digest, the trigger) -> after approval: precondition, re-plan; a changed intent is asked
      again showing the difference, observations that moved by themselves are reported as drift
      nothing to change any more -> unchanged
    snapshot (journal: what was saved, the restore command)
    act (each change a fenced step: journal `action` with its step key, never applied twice in a run)
    verify (retried a few times; a verify that fails is a failure, not a success)
      on any failure after a change: restore the snapshot, journal exactly what was restored
    outcome (one of records.OUTCOMES), the postmortem draft, always

A runbook module then reads:

    class Replay(RunbookSteps[ReplayParameters, ReplayPlan]):
        id = "kafka-replay"
        def target(self, params): ...
        def observe(self, env, params): ...
        def act(self, run, params, plan): run.step("alter-offsets", lambda: ..., "altered 3 offsets")
        def verify(self, run, params, plan, result): return Verification(...)

    STEPS = Replay()
    dry_run = STEPS.dry_run
    kafka_replay = runbook_flow(STEPS, ReplayParameters, "Replay a consumer group from offsets.")
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from prefect import Flow, flow, get_run_logger
from prefect.exceptions import PrefectSignal
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from pydantic import BaseModel

from mq_runbooks.base.catalog import Runbook
from mq_runbooks.base.clusters import Clusters
from mq_runbooks.base.errors import ParameterError, RunbookError, UnreachableError
from mq_runbooks.base.settings import Settings
from mq_runbooks.integrations.artemis import ArtemisManagement
from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.integrations.kafka_records import KafkaRecords
from mq_runbooks.integrations.rabbitmq import RabbitManagement
from mq_runbooks.integrations.redis_streams import RedisStreams
from mq_runbooks.kit import journal
from mq_runbooks.kit.endings import ended_state
from mq_runbooks.kit.faults import Fault
from mq_runbooks.kit.labels import WAITS_FOR, run_name, start_tags
from mq_runbooks.kit.plans import Plan
from mq_runbooks.kit.prefect_port import PREFECT
from mq_runbooks.kit.records import (
    Action, Error, Lock, Note, Observation, Outcome, PlanRecord, Restore, Snapshot, Start, Verification)
from mq_runbooks.kit.restore import drive_restore
from mq_runbooks.kit.restore_plan import RestoreItem, restore_of, start_summary
from mq_runbooks.kit.run_port import RunPort
from mq_runbooks.kit.runtime import RunContext
from mq_runbooks.kit.steps import approve_stable_plan

P = TypeVar("P", bound=BaseModel)
PlanT = TypeVar("PlanT", bound=Plan)
T = TypeVar("T")


class VerificationFailed(RunbookError):
    """The change was made but did not have the effect it was meant to have."""


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass
class Env:
    """What observing and planning need: the configuration, no run (so `runbook plan` can use it),
    the moment relative targets are measured from, and clients of the clusters of clusters.yaml.

    `planned_at` is None for `runbook plan` (now); in a run it is the moment the run first planned
    (its journal's start entry), the same in every re-plan and every execution of the run, so that
    `by_duration=PT15M` or "idle for 60 s" does not slide with the clock while people look.

    Clients: use each in a `with` block (it is closed at its end). One that is not is closed by the
    driver when the step that opened it (observe, act, verify, restore, the plan) returns, so a
    runbook never leaves a client for the garbage collector to tear down mid-request."""

    settings: Settings
    clusters: Clusters
    planned_at: dt.datetime | None = None
    _clients: list[Any] = field(default_factory=list, repr=False, compare=False)

    def plan_time_ms(self) -> int:
        """The moment relative targets are measured from, in epoch milliseconds (now outside a run)."""
        moment = self.planned_at or dt.datetime.now(dt.timezone.utc)
        return (moment - _EPOCH) // dt.timedelta(milliseconds=1)

    def since_planned_ms(self) -> int:
        """How long ago the run first planned, in milliseconds (0 outside a run): e.g. how much longer
        an entry idle `idle_ms` then has been idle by now."""
        if self.planned_at is None:
            return 0
        return max(0, int((dt.datetime.now(dt.timezone.utc) - self.planned_at).total_seconds() * 1000))

    def artemis(self, cluster: str) -> ArtemisManagement:
        """A Jolokia client of an Artemis broker of clusters.yaml (use it in a `with`): broker and HA
        state, queues, addresses, consumers, address settings."""
        return self._opened(ArtemisManagement.from_cluster(self.clusters.artemis_cluster(cluster)))

    def kafka(self, cluster: str) -> KafkaClient:
        """An admin client of a Kafka cluster of clusters.yaml (use it in a `with`): groups, lag,
        offsets, topics and their configuration (`describe_topic_config`, `alter_topic_config`)."""
        return self._opened(KafkaClient.from_cluster(self.clusters.kafka_cluster(cluster)))

    def kafka_records(self, cluster: str) -> KafkaRecords:
        """Single records of a Kafka cluster: `read_record(topic, partition, offset)`, copies to a
        dead-letter topic. Each call opens and closes its own consumer or producer."""
        config = self.clusters.kafka_cluster(cluster)
        return KafkaRecords(config.client_config(), name=config.name, timeout_s=config.request_timeout_s)

    def kafka_client_config(self, cluster: str) -> dict[str, str]:
        """The librdkafka settings of a Kafka cluster (bootstrap servers, SASL/TLS), for a client
        this API does not offer (e.g. a Producer). It holds secrets: never log or journal it, and
        close what you build with it before the step returns."""
        return dict(self.clusters.kafka_cluster(cluster).client_config())

    def rabbitmq(self, cluster: str) -> RabbitManagement:
        """A management API client of a RabbitMQ cluster of clusters.yaml (use it in a `with`):
        queues, consumers, channels, connections, policies (`policies`, `put_policy`, `delete_policy`)."""
        return self._opened(RabbitManagement.from_cluster(self.clusters.rabbit_cluster(cluster)))

    def redis(self, cluster: str) -> RedisStreams:
        """A client of a Redis server of clusters.yaml (use it in a `with`): streams, groups, pending
        entries (`stream_info` is XINFO STREAM) and plain keys (`key`, `set_key`, `delete_key`)."""
        return self._opened(RedisStreams.from_cluster(self.clusters.redis_cluster(cluster)))

    def close_clients(self) -> None:
        """Close every client this Env opened (the driver calls it after each step; idempotent)."""
        while self._clients:
            client = self._clients.pop()
            try:
                client.close()
            except Exception:  # noqa: BLE001  (closing must not hide the step's own outcome)
                pass

    def _opened(self, client: T) -> T:
        self._clients.append(client)
        return client


@dataclass
class Run(Env):
    """One run as its steps see it: the configuration, who asked, and a fenced way to change things."""

    id: str = ""
    runbook: Runbook | None = None
    context: RunContext | None = None
    requested_by: str = "unknown"
    trigger: dict[str, Any] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)  # summaries of the steps that changed something
    prior: list[journal.Entry] = field(default_factory=list)  # the journal when this execution began
    _applied: dict[str, journal.Entry] | None = None
    port: RunPort = field(default=PREFECT, repr=False, compare=False)  # journal, lock, gate (kit/run_port.py)

    @property
    def _fault(self) -> Fault | None:
        """Tests only (RUNBOOK_INJECT_FAULT): where the driver makes this run fail (kit/faults.py)."""
        return Fault.parse(self.settings.inject_fault)

    def note(self, summary: str, **data: Any) -> None:
        """Journal a line worth keeping in the run's timeline (kind `note`), with plain JSON `data`."""
        self.port.write(self.id, Note(summary=summary, data=data))

    def observed(self, summary: str, **data: Any) -> None:
        """Journal something the run saw on the broker (kind `observation`), with plain JSON `data`."""
        self.port.write(self.id, Observation(summary=summary, data=data))

    @property
    def applied_steps(self) -> dict[str, journal.Entry]:
        """The steps this run has applied (from the journal as this execution began, then kept up to
        date), by key."""
        if self._applied is None:
            self._applied = {e.data["step"]: e for e in self.prior if e.kind == "action" and "step" in e.data}
        return self._applied

    def step(self, key: str, apply: Callable[[], T], describe: Callable[[T], str] | str,
             data: Callable[[T], dict[str, Any]] | None = None, retries: int = 0,
             partial: bool = False) -> T | None:
        """Apply one change, fenced: if the journal already has an action with this step key (a
        re-executed or resumed run), it is not applied again and None is returned.

        `describe` is the journal summary (or a function of the result); `data` adds fields to it.
        `retries`: how often to try again when the broker did not answer (only for a change that is
        safe to repeat). `partial`: the change is not atomic (e.g. offsets of many partitions), so a
        failure may have applied part of it: it then counts as a change, and the snapshot is restored.
        """
        if key in self.applied_steps:
            done = self.applied_steps[key]
            self.note(f"step {key} was already applied in this run ({done.summary}): not applied again", step=key)
            self.changed.append(done.summary)
            return None
        fault = self._fault
        if fault is not None and fault.hits("fail-before", key):
            raise fault.error(key)
        if fault is not None and fault.hits("fail-during", key):
            apply = _then_raise(apply, fault.error(key))
        try:
            result = self.port.task(key, apply, retries=retries, retry_delay_s=2, retry_if=_unreachable)()
        except Exception as exc:
            if partial:
                self.changed.append(f"{key} failed part-way and may have applied part of its change ({exc})")
            raise
        summary = describe(result) if callable(describe) else describe
        entry = self.port.write(self.id, Action(step=key, summary=summary, data=data(result) if data else {}))
        self.applied_steps[key] = entry
        self.changed.append(summary)
        if fault is not None and fault.hits("stall-after", key):  # a process to kill, or to watch, mid-run
            time.sleep(fault.seconds)
        if fault is not None and fault.hits("fail-after", key):
            raise fault.error(key)
        return result


def _then_raise(apply: Callable[[], T], error: Exception) -> Callable[[], T]:
    """`apply`, then `error` instead of its result (a fault: the change reached the broker, the answer did not)."""
    @functools.wraps(apply)
    def applied_then_failed() -> T:
        apply()
        raise error
    return applied_then_failed


class RunbookSteps(Generic[P, PlanT]):
    """A runbook's own logic. Subclass it, set `id`, write target/observe/act/verify, and where they
    apply snapshot/restore/before_replan/refusal/read_only/report/outcome."""

    id: ClassVar[str]
    verify_attempts: ClassVar[int] = 3  # a read-back can lag the write by a moment
    verify_delay_s: ClassVar[float] = 1.0

    # -- required ---------------------------------------------------------------------------------
    def target(self, params: P) -> str:
        """The target in words, e.g. `primary/billing` (the journal's start line, Slack)."""
        raise NotImplementedError

    def observe(self, env: Env, params: P) -> PlanT:
        """Read the broker and compute the plan. Changes nothing. Raises ParameterError / NotFoundError
        for bad input (the CLI refuses it before a run exists)."""
        raise NotImplementedError

    def act(self, run: Run, params: P, plan: PlanT) -> Any:
        """Make the changes, each through `run.step(...)`. What it returns goes to verify."""
        raise NotImplementedError

    def verify(self, run: Run, params: P, plan: PlanT, result: Any) -> Verification:
        raise NotImplementedError

    # -- optional ---------------------------------------------------------------------------------
    def relative_targets(self, params: P) -> str | None:
        """What in these parameters is measured from the moment of planning, in words (e.g.
        `by_duration=PT15M`), or None. The driver journals it with the moment it is fixed to; the
        runbook measures it from `env.plan_time_ms()` (or `env.since_planned_ms()`), never the clock."""
        return None

    def read_only(self, params: P) -> bool:
        """True when these parameters only report (no lock, no gate, no change)."""
        return False

    def refusal(self, params: P, plan: PlanT) -> str | None:
        """Why this plan must not go to the gate (e.g. offsets that cannot be translated), or None."""
        return None

    def before_replan(self, run: Run, params: P, plan: PlanT) -> None:
        """After an approval, before the re-plan: e.g. wait for the consumers to be stopped. `plan`
        is the plan just approved."""

    def replan(self, run: Run, params: P, approved: PlanT) -> PlanT:
        """The plan again after an approval, to compare with the approved one (default: observe again;
        a runbook whose observation takes long may refresh `approved` instead)."""
        return self.observe(run, params)

    def snapshot(self, run: Run, params: P, plan: PlanT) -> Snapshot | None:
        """Save what act will change; the journal keeps it and its restore command."""
        return None

    def restore(self, run: Run, params: P, plan: PlanT | None, snapshot: Snapshot) -> Restore | None:
        """Put the snapshot back after a failure part-way (`plan` the run's plan), or in a restore run
        (`plan` None: from the snapshot's data alone); None when there is nothing to restore."""
        return None

    cannot_undo: ClassVar[tuple[str, ...]] = ()  # what a restore cannot put back, in words (its plan says so)

    def restore_items(self, env: Env, params: P, snapshot: Snapshot,
                      original: list[journal.Entry]) -> list[RestoreItem] | None:
        """`runbook restore RUN` (kit/restore.py): each value the snapshot of the run saved, what is
        there now, and what the run left it at (read from `original`, its journal). After the
        restore through `restore(run, params, None, snapshot)` (no plan: it works from the
        snapshot's data alone) they are read again and must equal the snapshot. None (not written):
        this runbook's runs are restored by hand, with the snapshot's `restore_command`."""
        return None

    def report(self, run: Run, params: P, plan: PlanT, result: Any) -> None:
        """Extra artifacts for the Prefect UI once it succeeded (result None: a read_only run)."""

    def outcome(self, params: P, plan: PlanT, result: Any) -> str:
        return f"done: {plan.summary()}"

    # -- provided ---------------------------------------------------------------------------------
    def dry_run(self, params: P, clusters: Clusters, settings: Settings | None = None) -> PlanT:
        """`runbook plan` (and the CLI's preflight): the plan and nothing else. Missing targets are
        refused here, so a run is never created for them."""
        env = Env(settings or Settings.from_environ(), clusters)
        plan = _closing(env, self.observe)(env, params)
        refuse_missing(self.id, plan)
        return plan


def refuse_missing(runbook_id: str, plan: Plan) -> None:
    missing = list(plan.missing_targets())
    if missing:
        raise ParameterError(runbook_id, [("target", f"{name} does not exist") for name in missing])


def runbook_flow(steps: RunbookSteps[P, PlanT], parameters: type[P], description: str) -> Flow:
    """The runbook's Prefect flow, named by its steps' id (the one place a runbook's id is written in
    Python) and taking (params, requested_by, trigger), as the CLI, alerts and Slack start runs:

        kafka_replay = runbook_flow(STEPS, ReplayParameters, "Replay a consumer group from offsets.")

    Bind it to the module attribute the catalog's `flow:` names (the id with underscores)."""
    def run(params: Any, requested_by: str = "unknown", trigger: dict[str, Any] | None = None) -> State:
        return drive(steps, params, requested_by, trigger)

    run.__annotations__ = {"params": parameters, "requested_by": str, "trigger": dict[str, Any] | None}
    run.__name__ = run.__qualname__ = steps.id.replace("-", "_")
    run.__module__ = type(steps).__module__
    run.__doc__ = description
    return flow(name=steps.id, description=description, persist_result=False)(run)


def _closing(env: Env, step: Callable[..., T]) -> Callable[..., T]:
    """`step`, closing every client it opened through `env` when it returns or raises."""
    @functools.wraps(step)
    def call(*args: Any, **kwargs: Any) -> T:
        try:
            return step(*args, **kwargs)
        finally:
            env.close_clients()
    return call


def _unreachable(error: BaseException) -> bool:
    """Retry a step only when the broker did not answer; our own errors are final."""
    return isinstance(error, UnreachableError)


def _transient(task_, task_run, state) -> bool:
    """Retry a step only when the broker did not answer; our own errors are final."""
    try:
        state.result()
    except UnreachableError:
        return True
    except Exception:  # noqa: BLE001
        return False
    return False


def drive(steps: RunbookSteps[P, PlanT], params: P, requested_by: str = "unknown",
          trigger: dict[str, Any] | None = None, *, port: RunPort = PREFECT, run_id: str | None = None,
          context: RunContext | None = None) -> State:
    """Run one runbook from start to outcome (see the module docstring). Call it from the flow (the
    run is the flow run, the port Prefect's); a test passes its own `port`, `run_id` and `context`.

    A run is executed again from the top after its gate suspended and an answer came: what its
    journal already holds (the start, the lock's lease, the plan, the answers) is taken from there,
    not done again."""
    run_id = run_id or str(flow_run.id)
    _tell_people_once()
    try:
        context = context or RunContext.load()
        run = Run(settings=context.settings, clusters=context.clusters, id=run_id,
                  runbook=context.catalog.get(steps.id), context=context, requested_by=requested_by,
                  trigger=dict(trigger or {}), port=port)
        run.prior = port.read(run_id)
        ended = journal.last(run.prior, "outcome")
        if ended is not None:  # Retry in the Prefect UI, or concluded as crashed while a worker started it
            port.logger().info("run %s has already ended (%s): executed again, it does nothing and keeps "
                                  "its final state", run_id, ended.summary)
            return ended_state(run.prior)
        start = journal.last(run.prior, "parameters")
        undoes = restore_of(run.trigger)  # a restore run (kit/restore.py): `runbook restore RUN`
        if start is None:
            start = port.write(run_id, Start(
                summary=start_summary(steps.id, steps.target(params), undoes, requested_by) if undoes else
                f"{steps.id} on {steps.target(params)}, requested by {requested_by}", runbook=steps.id,
                parameters=params.model_dump(mode="json"), requested_by=requested_by, trigger=run.trigger,
                target=steps.target(params)))
            _record_relative_targets(steps, run, params, start.at)
            _label(port, run_id, name=("restore " if undoes else "") + run_name(steps.id, steps.target(params)),
                   add=start_tags(steps.id, run.runbook.lock_key(params), requested_by))
        else:
            port.logger().info("resumed after its gate: the journal holds %d entries", len(run.prior))
        run.planned_at = start.at  # from the journal: the same moment in every execution of the run
        state = _drive(steps, run, params) if undoes is None else drive_restore(
            steps, run, params, closing=_closing, record_plan=_record_plan, transient=_transient)
    except PrefectSignal:  # suspended at the gate: the run goes on when it is answered
        _show(port, run_id)
        raise
    except Exception as exc:
        if journal.last(port.read(run_id), "outcome") is None:
            port.write(run_id, Error(summary=f"{type(exc).__name__}: {exc}"))
            port.write(run_id, Outcome(outcome="failed", summary=f"failed before changing anything: {exc}"))
        port.publish_postmortem(run_id)
        _show(port, run_id, ended=True)
        raise
    port.publish_postmortem(run_id)
    _show(port, run_id, ended=True)
    return state


@functools.cache
def _tell_people_once() -> None:
    journal.add_listener(_tell_people)


def _tell_people(run_id: str, entry: journal.Entry) -> None:
    """A human line in the run's logs (Prefect's Logs tab) for each step of this run: the plan, who
    approved, the snapshot and where it is, each change, what verify read back, a restore, the outcome.
    A declined gate already says so in one INFO line (kit/endings.py); a refused answer in a WARNING."""
    if entry.kind not in ("plan", "approval", "snapshot", "action", "verification", "rollback", "outcome") \
            or str(flow_run.id) != run_id or entry.data.get("outcome") == "rejected":
        return
    words = {"plan": "plan", "approval": "approval", "snapshot": "snapshot saved", "action": "changed",
             "verification": "verified", "rollback": "restored", "outcome": "outcome"}[entry.kind]
    where = f" (at {entry.data['path']})" if entry.kind == "snapshot" and entry.data.get("path") else ""
    failed = (entry.kind == "verification" and entry.data.get("ok") is False) or entry.kind == "rollback" or \
        (entry.kind == "outcome" and entry.data.get("outcome") == "failed")
    get_run_logger().log(logging.WARNING if failed else logging.INFO, "%s: %s%s",
                         "verification FAILED" if entry.kind == "verification" and failed else words,
                         entry.summary, where)


def _show(port: RunPort, run_id: str, ended: bool = False) -> None:
    """What Prefect's UI shows of the run: its journal as a timeline and, once it ended, no tag saying
    it waits (kit/labels.py, kit/run_artifacts.py). Logged when it cannot be written; never stops the run."""
    try:
        port.publish_timeline(run_id, port.read(run_id))
        if ended:
            port.label(run_id, remove=[WAITS_FOR])
    except Exception as exc:  # noqa: BLE001
        port.logger().warning("could not update the run's timeline or tags in Prefect (%s): %s",
                                 type(exc).__name__, exc)


def _label(port: RunPort, run_id: str, **change: Any) -> None:
    """Name and tag the run for people (kit/labels.py); a label that cannot be written is logged, and
    never stops the run."""
    try:
        port.label(run_id, **change)
    except Exception as exc:  # noqa: BLE001
        port.logger().warning("could not label the run in Prefect (%s): %s", type(exc).__name__, exc)


def _record_relative_targets(steps: RunbookSteps[P, PlanT], run: Run, params: P, planned_at: dt.datetime) -> None:
    """Journal what is measured from the run's first plan, and from which moment (once, at the start)."""
    relative = steps.relative_targets(params)
    if relative:
        moment = planned_at.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        run.port.write(run.id, Note(summary=f"relative targets fixed at the first plan: {relative} measured from "
                                           f"{moment}, in every re-plan and every resumption of this run",
                                   data={"relative_targets": relative, "planned_at": moment}))


def _observe(steps: RunbookSteps[P, PlanT], run: Run, params: P) -> PlanT:
    """The plan before the gate. Its result is persisted (Prefect's result storage, keyed by the run),
    so a run executed again after its gate reads it back instead of observing again where the storage
    is reachable; elsewhere it observes again (from the same `planned_at`). The journal keeps the
    first plan; later versions are recorded by the gate (steps.approve_stable_plan) when their intent
    changed."""
    observe = run.port.task("observe-and-plan", _closing(run, steps.observe), retries=2, retry_delay_s=2,
                            retry_if=_unreachable, persist_key=f"mq-runbooks-{run.id}-observe")
    plan = observe(run, params)
    if journal.last(run.prior, "plan") is None:
        _record_plan(run.id, plan, port=run.port)
    return plan


def _record_plan(run_id: str, plan: Plan, preface: str = "", *, port: RunPort = PREFECT, **data: Any) -> None:
    """Journal a version of the plan; `preface` (e.g. what changed since the approved version) goes
    above its Markdown, which is what the gate, `status --plan` and Slack show."""
    port.write(run_id, PlanRecord(
        summary=plan.summary(), digest=plan.digest(), columns=list(plan.columns()),
        rows=[list(row) for row in plan.rows()], changes_anything=plan.changes_anything(), csv=plan.to_csv(),
        markdown=f"{preface}\n\n{plan.markdown()}" if preface else plan.markdown(), data={**plan.to_json(), **data}))
    try:  # the table people read on the run's page (a new version of its keyed artifact)
        port.publish_plan(run_id, plan.summary(), list(plan.columns()), [list(row) for row in plan.rows()])
    except Exception as exc:  # noqa: BLE001  (the journal holds the plan; the artifact is a view of it)
        port.logger().warning("could not publish the plan's table artifact (%s): %s", type(exc).__name__, exc)


def _end(run: Run, outcome: str, summary: str, changed: list[str] | None = None, **data: Any) -> None:
    run.port.write(run.id, Outcome(outcome=outcome, summary=summary, changed=changed or [], data=data))


def _drive(steps: RunbookSteps[P, PlanT], run: Run, params: P) -> State:
    if steps.read_only(params):  # changes nothing, so it takes no lock and asks nobody
        plan = _observe(steps, run, params)
        _closing(run, steps.report)(run, params, plan, None)
        _end(run, "unchanged", f"report only: {plan.summary()}; nothing was changed", report=True)
        return Completed(message=f"report: {plan.summary()}")
    assert run.runbook is not None and run.context is not None
    key = run.runbook.lock_key(params)
    held = journal.last(run.prior, "lock")
    adopt = held.data.get("lease_id") if held is not None else None
    suspended_for = [0.0]
    with run.port.lock(key, run.id, run.settings.lock_wait_s, adopt=adopt,
                       suspended_for=lambda: suspended_for[0]) as lease:
        if adopt is None or str(lease.id) != str(adopt):
            run.port.write(run.id, Lock(summary=f"holding lock {key}", key=key, lease_id=str(lease.id)))
        plan = _observe(steps, run, params)
        stop = _stop_before_acting(steps, run, params, plan)
        if stop is not None:
            return stop

        latest = [plan]  # the plan put to the gate last (a changed plan is asked again)

        def replan() -> PlanT:
            _closing(run, steps.before_replan)(run, params, latest[0])
            latest[0] = run.port.task("re-plan", _closing(run, steps.replan), retries=2, retry_delay_s=2,
                                      retry_if=_unreachable)(run, params, latest[0])
            return latest[0]  # acted on when its intent is the one approved, else asked again

        def record(changed: PlanT, preface: str = "", **data: Any) -> None:
            _record_plan(run.id, changed, preface, port=run.port, **data)

        approved, refused = approve_stable_plan(
            run_id=run.id, context=run.context, runbook=run.runbook, requested_by=run.requested_by, plan=plan,
            markdown=lambda p: p.markdown(), replan=replan, record_plan=record, trigger=run.trigger,
            on_suspend=lambda seconds: suspended_for.__setitem__(0, seconds), port=run.port)
        if refused is not None:
            return refused
        stop = _stop_before_acting(steps, run, params, approved, after_approval=True)
        if stop is not None:
            return stop
        return _apply(steps, run, params, approved)


def _stop_before_acting(steps: RunbookSteps[P, PlanT], run: Run, params: P, plan: PlanT,
                        after_approval: bool = False) -> State | None:
    """The same decisions for every runbook: missing targets and refusals stop the run, a plan that
    changes nothing ends it as unchanged."""
    missing = list(plan.missing_targets())
    if missing:
        message = f"refused: {'; '.join(f'{name} does not exist' for name in missing)}; nothing was changed"
        _end(run, "refused", message, missing=missing)
        return Failed(message=message, name="Refused")
    reason = steps.refusal(params, plan)
    if reason:
        message = f"refused: {reason}; nothing was changed"
        _end(run, "refused", message)
        return Failed(message=message, name="Refused")
    if not plan.changes_anything():
        when = " any more" if after_approval else ""
        message = f"nothing to change{when}: {plan.summary()}"
        _end(run, "unchanged", message)
        return Completed(message=message)
    return None


def _apply(steps: RunbookSteps[P, PlanT], run: Run, params: P, plan: PlanT) -> State:
    snapshot = run.port.task("snapshot", _closing(run, steps.snapshot))(run, params, plan)
    if snapshot is not None:
        run.port.write(run.id, snapshot)
    try:
        result = run.port.task("act", _closing(run, steps.act))(run, params, plan)
        verification = _verify(steps, run, params, plan, result)
        run.port.write(run.id, verification)
        if not verification.ok:
            raise VerificationFailed(f"verification failed: {verification.summary}")
    except Exception as exc:
        run.port.write(run.id, Error(summary=f"{type(exc).__name__}: {exc}"))
        _fail_after_change(steps, run, params, plan, snapshot, exc)
        raise
    _closing(run, steps.report)(run, params, plan, result)
    summary = steps.outcome(params, plan, result)
    _end(run, "succeeded", summary, run.changed,
         **_counted(*(entry.data for entry in run.applied_steps.values()), verification.data))
    return Completed(message=summary)


def _counted(*documents: dict[str, Any]) -> dict[str, int | float]:
    """The numbers among the top-level fields of `documents` (a later one wins), for the outcome:
    a script reads `moved` and `seen_at_plan` there, not in the summary's prose."""
    return {key: value for document in documents for key, value in document.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("outcome", "changed")}


def _verify(steps: RunbookSteps[P, PlanT], run: Run, params: P, plan: PlanT, result: Any) -> Verification:
    check = run.port.task("verify", _closing(run, steps.verify))
    verification = check(run, params, plan, result)
    for _ in range(steps.verify_attempts - 1):
        if verification.ok:
            break
        time.sleep(steps.verify_delay_s)
        verification = check(run, params, plan, result)
    fault = run._fault
    if fault is not None and fault.hits("verify"):
        verification = verification.model_copy(update={"ok": False, "summary": "injected fault: verification "
                                                        f"forced to fail ({verification.summary})"})
    return verification


def _fail_after_change(steps: RunbookSteps[P, PlanT], run: Run, params: P, plan: PlanT,
                       snapshot: Snapshot | None, exc: Exception) -> None:
    """Say exactly what changed, restore the snapshot where there is one, and how to restore by hand."""
    if not run.changed:
        _end(run, "failed", f"failed before changing anything: {exc}")
        return
    changed = "; ".join(run.changed)
    by_hand = snapshot.restore_command if snapshot is not None else None
    if snapshot is None:
        _end(run, "failed", f"failed after changing: {changed}. Nothing to restore automatically: {exc}",
             run.changed)
        return
    try:
        restored = run.port.task("restore-snapshot", _closing(run, steps.restore), retries=2, retry_delay_s=1,
                                 retry_if=_unreachable)(run, params, plan, snapshot)
    except Exception as restore_exc:  # noqa: BLE001  (said exactly, then the original failure is raised)
        run.port.write(run.id, Restore(summary=f"RESTORE FAILED: {restore_exc}. Restore by hand: {by_hand}",
                                      restored=False, restore_command=by_hand))
        _end(run, "failed", f"failed after changing: {changed}; the restore failed too ({restore_exc}); "
             f"restore by hand with: {by_hand}", run.changed)
        run.port.logger().error("restore failed: %s; restore by hand with: %s", restore_exc, by_hand)
        return
    if restored is None:
        _end(run, "failed", f"failed after changing: {changed}; nothing was restored (restore by hand: "
             f"{by_hand}): {exc}", run.changed)
        return
    run.port.write(run.id, restored)
    _end(run, "failed", f"failed and rolled back: {exc}; {restored.summary}; it had changed: {changed}",
         run.changed)


__all__ = ["Env", "Run", "RunbookSteps", "VerificationFailed", "drive", "refuse_missing", "runbook_flow"]
