from pathlib import Path

import pytest

from mq_runbooks.base.errors import ConfigError
from mq_runbooks.base.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_point_at_the_repository_and_the_local_prefect():
    settings = Settings.from_environ({})
    assert settings.clusters == Path.cwd() / "clusters.yaml"  # relative defaults: the working directory
    assert settings.catalog == REPO / "runbooks"
    assert settings.prefect_api_url == "http://127.0.0.1:4200/api"


def test_values_come_only_from_the_given_environment(tmp_path):
    settings = Settings.from_environ({
        "RUNBOOK_CLUSTERS": str(tmp_path / "c.yaml"), "PREFECT_API_URL": "http://p:1/api",
        "RUNBOOK_SLACK_BOT_TOKEN": "xoxb-secret",
    })
    assert settings.clusters == tmp_path / "c.yaml"
    assert settings.prefect_api_url == "http://p:1/api"
    assert "xoxb-secret" not in repr(settings)


def test_a_misspelt_setting_is_an_error_listing_the_known_ones():
    with pytest.raises(ConfigError, match="unknown setting RUNBOOK_CLUSTER .*known: RUNBOOK_CLUSTERS"):
        Settings.from_environ({"RUNBOOK_CLUSTER": "x"})
