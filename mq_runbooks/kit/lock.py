"""One run per target at a time: a Prefect global concurrency limit of 1 per lock key
(e.g. `kafka:primary:group:billing`), created on first use (a limit that does not exist would
not lock at all), held from the plan to the run's final state.

The slot is held through a lease whose id the run keeps in its journal (`lock` entry), so the lock
outlives the run's process where it should and only there:
- while the process lives, a thread renews the lease every LEASE_S/3; a process that dies (SIGKILL,
  a lost machine) stops renewing, and the lock frees itself LEASE_S later (or at once when the crash
  is concluded: `release(lease_id)`);
- while the run waits suspended at its gate (no process at all), the lease is extended to the gate's
  deadline plus LEASE_S, and the resumed run adopts the same lease (`adopt=lease_id`).

Runs carry the tag `lock:<key>` (set by whoever creates them), so a run that waits too long can say
which run holds the lock.
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from uuid import UUID

import httpx
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound, PrefectSignal

from mq_runbooks.base.errors import PreconditionError, UnreachableError
from mq_runbooks.kit import gateway
from mq_runbooks.kit.gateway.names import lock_tag

LEASE_S = 120  # renewed while the holder lives
MAX_LEASE_S = 24 * 3600  # what the Prefect server accepts
BUSY_S = 600.0  # how long a busy Prefect server (503) is asked again for a lock before the run gives up

log = logging.getLogger("runbook.lock")


def limit_name(key: str) -> str:
    """A concurrency-limit name for a lock key: readable, URL-safe, and unique per key."""
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", key).strip("-")[:80]
    return f"runbook-{readable}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _ensure_limit(name: str) -> None:
    with gateway.connect() as prefect:
        prefect.ensure_limit(name, limit=1)


def holders(key: str, exclude: UUID | str | None = None) -> list[str]:
    """Descriptions of the live runs that carry this lock's tag, other than `exclude`."""
    with gateway.connect() as prefect:
        runs = prefect.read_flow_runs(tags=[lock_tag(key)], limit=10,
                                      state_types=[StateType.PENDING, StateType.RUNNING, StateType.PAUSED])
    return [f"{run.name} ({run.id}, {run.state.name if run.state else 'unknown'})"
            for run in runs if str(run.id) != str(exclude)]


class Lease:
    """A held slot: renewed by a thread while this process holds it; extended, released."""

    def __init__(self, key: str, lease_id: UUID) -> None:
        self.key, self.id = key, lease_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_while_held, daemon=True, name=f"lease-{key}")
        self._thread.start()

    def _renew_while_held(self) -> None:
        while not self._stop.wait(LEASE_S / 3):
            try:
                renew(self.id, LEASE_S)
            except Exception as exc:  # noqa: BLE001  (tried again at the next round, well within the lease)
                log.warning("renewing the lease of lock %s failed: %s", self.key, exc)

    def stop_renewing(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def extend(self, seconds: float) -> None:
        """Hold it `seconds` from now with no process renewing it (a suspended run)."""
        self.stop_renewing()
        renew(self.id, min(max(seconds, 60.0), MAX_LEASE_S))

    def release(self) -> None:
        self.stop_renewing()
        release(self.id)


def renew(lease_id: UUID | str, seconds: float) -> bool:
    """Renew a lease for `seconds`; False when it has expired or was released (the slot is free)."""
    with gateway.connect() as prefect:
        try:
            prefect.renew_lease(lease_id, seconds)
        except Exception as exc:
            if _gone(exc):
                return False
            raise
    return True


def _gone(exc: Exception) -> bool:
    """Whether the server answered that the lease no longer exists (404/410)."""
    return isinstance(exc, ObjectNotFound) or getattr(getattr(exc, "response", None), "status_code", None) in (404, 410)


def release(lease_id: UUID | str) -> None:
    """Free a lock's slot (a lease that is already gone is fine)."""
    with gateway.connect() as prefect:
        try:
            prefect.release_lease(lease_id)
        except Exception as exc:
            if not _gone(exc):
                raise


def _acquire(name: str, flow_run_id: UUID | str, timeout: float) -> UUID:
    """The lease of the limit's slot, waiting at most `timeout`; TimeoutError when it stays taken.
    (Asked over the client itself: Prefect's own helper releases the lease when the flow's process
    ends, which a run suspended at its gate must not do.)"""
    started = time.monotonic()
    deadline = started + timeout
    with gateway.connect() as prefect:
        while True:
            try:
                return prefect.take_slot(name, flow_run_id, LEASE_S)
            except httpx.HTTPStatusError as exc:
                status = exc.response.status_code
                if status == 503 and time.monotonic() - started < BUSY_S:
                    # Busy (SQLite locked under a burst of runs), after the client's own retries: the
                    # slot is neither taken nor granted yet, so this is no reason to give the run up.
                    log.warning("the Prefect server is busy (503) granting the lock %s; asking again", name)
                    deadline = max(deadline, time.monotonic() + 1.0)
                    time.sleep(1.0)
                    continue
                if status == 503:
                    raise UnreachableError(
                        f"the Prefect server stayed busy (503 Service Unavailable) for {BUSY_S:.0f}s while this "
                        f"run asked for its lock {name!r}; nothing was changed: start the run again") from None
                if status != 423:  # 423 Locked: the slot is taken
                    raise
                retry_after = float(exc.response.headers.get("Retry-After") or 1)
            if time.monotonic() + min(retry_after, 1.0) > deadline:
                raise TimeoutError(f"the slot of {name} stayed taken for {timeout:.0f}s")
            time.sleep(min(retry_after, 1.0))


@contextmanager
def target_lock(key: str, flow_run_id: UUID | str, wait_s: float, adopt: UUID | str | None = None,
                suspended_for: Callable[[], float] | None = None) -> Iterator[Lease]:
    """Hold the lock of `key` for the block; wait at most `wait_s` for it, then raise PreconditionError
    naming the run that holds it. `adopt`: the lease an earlier part of this run took (a resumed run),
    renewed when it is still held, else the lock is taken again.

    The block ending normally or by an exception releases the lock. The block leaving because the run
    suspended (Prefect's Pause signal) keeps it: the lease is extended by `suspended_for()` seconds."""
    name = limit_name(key)
    lease_id = UUID(str(adopt)) if adopt is not None and renew(adopt, LEASE_S) else None
    if lease_id is None:
        _ensure_limit(name)
        lease_id = _take(key, name, flow_run_id, wait_s)
    lease = Lease(key, lease_id)
    try:
        yield lease
    except PrefectSignal:  # suspended at the gate: the lock stays with the run
        lease.extend((suspended_for() if suspended_for else 0.0) + LEASE_S)
        raise
    except BaseException:
        lease.release()
        raise
    else:
        lease.release()


def _take(key: str, name: str, flow_run_id: UUID | str, wait_s: float) -> UUID:
    # A slow Prefect server can make a free slot look taken within a short wait: when no live run
    # carries the lock's tag, try once more, longer, before calling it held.
    attempts = [wait_s, max(wait_s, 15.0)]
    for attempt, timeout in enumerate(attempts, start=1):
        try:
            return _acquire(name, flow_run_id, timeout)
        except TimeoutError:
            held_by = holders(key, exclude=flow_run_id)
            if held_by or attempt == len(attempts):
                raise PreconditionError(
                    f"another run holds the lock {key!r}: "
                    f"{', '.join(held_by) or 'a run that has ended (its lease expires soon)'}; "
                    f"waited {sum(attempts[:attempt]):.0f}s. Try again when it has finished."
                ) from None
    raise AssertionError("unreachable")
