"""Deployments, work pools and their workers, runs created from a deployment, and the server's
automations: the reads and writes of a `Session` (session.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.objects import Worker
from prefect.client.schemas.responses import DeploymentResponse
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

if TYPE_CHECKING:
    from prefect.automations import Automation
    from prefect.client.orchestration import SyncPrefectClient


class Deployments:
    _client: "SyncPrefectClient"

    def deployment_id(self, name: str) -> UUID:
        """The id of deployment `<flow>/<name>`; prefect.exceptions.ObjectNotFound when there is none."""
        return self._client.read_deployment_by_name(name).id

    def read_deployment(self, deployment_id: UUID) -> DeploymentResponse:
        return self._client.read_deployment(deployment_id)

    def create_flow_run(self, deployment_id: UUID, body: dict[str, Any]) -> str:
        """A run of the deployment from a create-from-deployment body (app/starts.py run_body); its id."""
        response = self._client.request("POST", "/deployments/{id}/create_flow_run", path_params={"id": deployment_id},
                                        json=body)
        return str(response.json()["id"])

    def create_flow_runs(self, deployment_id: UUID, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Runs of the deployment in one transaction (Prefect's bulk create): per body, the server's
        answer ({"status": "CREATED", "flow_run_id": ...} or why not)."""
        response = self._client.request("POST", "/deployments/{id}/create_flow_run/bulk",
                                        path_params={"id": deployment_id}, json=bodies)
        return response.json()["results"]

    def ensure_work_pool(self, name: str, template: dict[str, Any], description: str) -> None:
        """The process work pool `name` with `template` as its base job template: created once, the
        template brought up to date when it differs."""
        try:
            pool = self._client.read_work_pool(name)
        except ObjectNotFound:
            try:
                self._client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template,
                                                             description=description))
                return
            except ObjectAlreadyExists:
                pool = self._client.read_work_pool(name)
        if pool.base_job_template != template:
            self._client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))

    def read_workers(self, work_pool: str) -> list[Worker]:
        return self._client.read_workers_for_work_pool(work_pool)

    def read_automations(self) -> list[dict[str, Any]]:
        """Every automation on the server, as the server gives them (JSON)."""
        listed = self._client.request("POST", "/automations/filter", json={})
        listed.raise_for_status()
        return listed.json()

    def create_automation(self, automation: "Automation") -> None:
        automation.create()

    def delete_automation(self, automation_id: UUID | str) -> None:
        self._client.delete_automation(automation_id)
