"""A plain (non-editable) install, used from another directory: one import package, mq_runbooks, with
the catalog, the postmortem templates and the scaffolds inside it, and nothing named flows or
integrations beside it."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "mq_runbooks", "flows", "integrations")

CHECK = '''
import sys, json
from pathlib import Path
target = Path(sys.argv[1])
import mq_runbooks
assert Path(mq_runbooks.__file__).is_relative_to(target), mq_runbooks.__file__
from mq_runbooks.base.catalog import load_catalog
from mq_runbooks.base.resources import default_catalog, default_templates
catalog = load_catalog(default_catalog())
assert default_catalog().is_relative_to(target) and default_templates().is_relative_to(target)
sys.path.append(sys.argv[2])  # the repository, for the test's sample run records only
from tests.kit.test_postmortem import records, secret_laden_run, settings_for
from mq_runbooks.kit.postmortem.context import render_draft
outcome, body = render_draft(records(secret_laden_run()), settings_for(Path(sys.argv[3])))
print(json.dumps({"runbooks": [r.id for r in catalog], "outcome": outcome, "body": body}))
'''


def test_a_plain_install_works_from_any_directory(tmp_path):
    source = tmp_path / "source"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "drafts"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(path, source / name)
    target = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                            "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr

    # Importable packages only: `bin` holds the `runbook` console script.
    packages = sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin")
    assert packages == ["mq_runbooks"]
    assert (target / "bin" / "runbook").is_file()
    assert (target / "mq_runbooks" / "app" / "scaffold" / "kafka-group.py.tmpl").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checked = subprocess.run([sys.executable, "-c", CHECK, str(target), str(REPO), str(tmp_path)], cwd=elsewhere,
                             capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(target),
                                                                              "PATH": "/usr/bin:/bin"})
    assert checked.returncode == 0, checked.stderr
    import json

    result = json.loads(checked.stdout.splitlines()[-1])
    assert {"kafka-replay", "rabbitmq-failover"} <= set(result["runbooks"])
    assert result["outcome"] == "succeeded" and "kafka-replay" in result["body"]
