"""The reference the start-latency benchmarks are measured against, in the same run (the machine is
shared and noisy): a fresh interpreter importing Prefect, as every run did before the preloaded starter."""
from __future__ import annotations

import statistics
import subprocess
import sys
import time


def import_prefect_s() -> float:
    """Wall seconds of one `python -c "import prefect"`."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import prefect"], check=True)
    return time.monotonic() - started


def import_prefect_median_s(times: int = 3) -> float:
    return statistics.median(import_prefect_s() for _ in range(times))
