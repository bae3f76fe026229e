"""Global concurrency limits and their leases (the locks of kit/lock.py): the writes of a `Session`
(session.py). Errors are Prefect's, as the server gives them (kit/lock.py reads 404/410/423/503)."""
from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient


class Leases:
    _client: "SyncPrefectClient"

    def ensure_limit(self, name: str, limit: int = 1) -> None:
        """The global concurrency limit `name`, created with `limit` slots when it does not exist."""
        try:
            self._client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                self._client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            except ObjectAlreadyExists:
                pass  # another run created it first

    def take_slot(self, name: str, flow_run_id: UUID | str, lease_s: float) -> UUID:
        """The lease of one slot of limit `name`, held by a flow run for `lease_s`; httpx.HTTPStatusError
        423 when the slot is taken (503 when the server is busy)."""
        holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(str(flow_run_id)))
        response = self._client.increment_concurrency_slots_with_lease([name], 1, "concurrency", lease_s, holder=holder)
        return UUID(response.json()["lease_id"])

    def renew_lease(self, lease_id: UUID | str, seconds: float) -> None:
        self._client.renew_concurrency_lease(UUID(str(lease_id)), seconds)

    def release_lease(self, lease_id: UUID | str) -> None:
        self._client.release_concurrency_slots_with_lease(UUID(str(lease_id)))
