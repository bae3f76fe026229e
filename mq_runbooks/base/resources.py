"""Where the files shipped inside the package are: the default catalog and the postmortem templates.

Both are data folders inside the package (pyproject.toml's package-data), found through the
import system, so they are found the same way in a source checkout, an editable install and a plain
`pip install .` used from any directory.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{package} is not installed with mq-runbooks (reinstall the package)")
    return Path(list(spec.submodule_search_locations)[0])


def default_catalog() -> Path:
    """The directory of the runbook files that ship with mq-runbooks (mq_runbooks/runbooks/ in the source tree)."""
    return _package_dir("mq_runbooks.runbooks")


def default_templates() -> Path:
    """The directory of the shipped postmortem templates (mq_runbooks/kit/postmortem/templates in the source tree)."""
    return _package_dir("mq_runbooks.kit.postmortem") / "templates"
