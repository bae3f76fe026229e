"""Artifacts (the journal's entries, the plan's table, the timeline): the reads and writes of a
`Session` (session.py)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey, ArtifactFilterType
from prefect.client.schemas.objects import Artifact
from prefect.client.schemas.sorting import ArtifactSort

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient


class Artifacts:
    _client: "SyncPrefectClient"

    def create_artifact(self, *, key: str, type: str, data: Any, description: str,
                        flow_run_id: UUID | str | None = None) -> None:
        """A new artifact (a new version of `key`), attached to a flow run when one is given."""
        self._client.create_artifact(ArtifactCreate(
            key=key, type=type, data=data, description=description,
            **({"flow_run_id": UUID(str(flow_run_id))} if flow_run_id is not None else {})))

    def read_artifacts(self, *, keys: Sequence[str] | None = None, types: Sequence[str] | None = None,
                       flow_run_ids: Sequence[UUID | str] | None = None, limit: int, offset: int = 0) -> list[Artifact]:
        """A page of the artifacts (every version) matching all the given conditions, newest first."""
        return self._client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=list(keys)) if keys is not None else None,
            type=ArtifactFilterType(any_=list(types)) if types is not None else None,
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(i)) for i in flow_run_ids])
            if flow_run_ids is not None else None),
            sort=ArtifactSort.CREATED_DESC, limit=limit, offset=offset)

    def update_artifact(self, artifact_id: UUID, *, data: Any, description: str) -> None:
        self._client.update_artifact(artifact_id, ArtifactUpdate(data=data, description=description))
