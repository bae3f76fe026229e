"""What a flow run needs from the configuration, read once when the run starts."""
from __future__ import annotations

from dataclasses import dataclass

from engine.catalog import Catalog, load_catalog
from engine.clusters import Clusters, load_clusters
from engine.settings import Settings
from engine.teams import teams_for


@dataclass(frozen=True)
class RunContext:
    settings: Settings
    clusters: Clusters
    catalog: Catalog
    teams: dict[str, list[str]]

    @classmethod
    def load(cls) -> "RunContext":
        settings = Settings.from_environ()
        return cls(settings, load_clusters(settings.clusters), load_catalog(settings.catalog), teams_for(settings))
