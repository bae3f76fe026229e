from pathlib import Path

import pytest

from mq_runbooks.base.errors import ConfigError
from mq_runbooks.base.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_point_at_the_repository_and_the_local_prefect():
    settings = Settings.from_environ({})
    assert settings.clusters == Path.cwd() / "clusters.yaml"  # relative defaults: the working directory
    assert settings.catalog == REPO / "mq_runbooks" / "runbooks"
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


def test_identity_settings_are_parsed_and_bad_ones_named():
    settings = Settings.from_environ({"RUNBOOK_TRUSTED_PROXIES": "10.0.4.17, 10.0.5.0/24,::1",
                                      "RUNBOOK_IDENTITY_HEADERS": "X-Auth-Request-Email",
                                      "RUNBOOK_PUBLIC_URL": "https://runbooks.example.com/",
                                      "RUNBOOK_TOKEN": "rbt_secret"})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.4.17/32", "10.0.5.0/24", "::1/128"]
    assert settings.identity_headers == ("X-Auth-Request-Email",)
    assert settings.public_url == "https://runbooks.example.com" and "rbt_secret" not in repr(settings)
    defaults = Settings.from_environ({})
    assert defaults.trusted_proxies == () and defaults.public_url == "" and not defaults.review_require_identity
    for name, value, expected in [
        ("RUNBOOK_TRUSTED_PROXIES", "10.0.0.1,proxy.local", "'proxy.local' is not an IP address or CIDR"),
        ("RUNBOOK_IDENTITY_HEADERS", "X Email", "header names are letters, digits and '-'"),
        ("RUNBOOK_PUBLIC_URL", "runbooks.example.com", "is not an http(s) URL"),
    ]:
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            Settings.from_environ({name: value})
