import pytest

from mq_runbooks.base.matchers import parse_matcher


@pytest.mark.parametrize("text, labels, expected", [
    ('alertname="Lag"', {"alertname": "Lag"}, True),
    ('alertname="Lag"', {"alertname": "LagX"}, False),
    ('env!="dev"', {"env": "prod"}, True),
    ('env!="dev"', {}, True),
    ('severity=~"page|critical"', {"severity": "critical"}, True),
    ('severity=~"page|critical"', {"severity": "criticality"}, False),  # anchored
    ('severity!~"info|warning"', {"severity": "page"}, True),
    ('severity!~"info|warning"', {"severity": "warning"}, False),
    ('team=~".*"', {}, True),
    ('team=""', {}, True),
])
def test_alertmanager_operators(text, labels, expected):
    assert parse_matcher(text).matches(labels) is expected


@pytest.mark.parametrize("text", ['alertname', 'a=="b"', '1a="b"', 'a=~"("'])
def test_malformed_matchers_are_refused_with_the_syntax(text):
    with pytest.raises(ValueError, match="matcher|regex"):
        parse_matcher(text)
