"""What the preloaded run starter (app/starter.py) imports once, before it forks any run: Prefect's
flow engine and client, the executor, and the flows of the catalog this process is configured with;
the catalog and Prefect's settings it keeps for the runs it forks (app/executor.py). A catalog that
does not load here is loaded (and its error reported) by each run instead."""
import prefect  # noqa: F401
import prefect.flow_engine  # noqa: F401

import mq_runbooks.kit.gateway  # noqa: F401  (Prefect's client, through the one module that builds it)
from mq_runbooks.app import executor
from mq_runbooks.base.settings import Settings

executor.remember_preloaded_settings()
try:
    executor.remember_preloaded_catalog(Settings.from_environ())
except Exception:  # noqa: BLE001  (never stop the starter: the run reports its own error)
    pass
