"""What a flow run needs from the configuration, read once when the run starts."""
from __future__ import annotations

from dataclasses import dataclass

from mq_runbooks.base.catalog import Catalog, load_catalog
from mq_runbooks.base.clusters import Clusters, load_clusters
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit.teams import teams_for


@dataclass(frozen=True)
class RunContext:
    settings: Settings
    clusters: Clusters
    catalog: Catalog
    teams: dict[str, list[str]]

    @classmethod
    def load(cls) -> "RunContext":
        settings = Settings.from_environ()
        catalog = load_catalog(settings.catalog, settings.team_catalog)
        return cls(settings, load_clusters(settings.clusters), catalog, teams_for(settings))
