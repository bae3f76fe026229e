"""The catalog: every file of runbooks/ loads (one parametrised test over them all), and a bad file
is refused with its path, the field and what is allowed."""
import json
from pathlib import Path

import pytest

from mq_runbooks.base.catalog import load_catalog, load_runbook
from mq_runbooks.base.errors import CatalogError, NotFoundError, ParameterError

REPO = Path(__file__).resolve().parents[2]
CATALOG_FILES = sorted((REPO / "mq_runbooks" / "runbooks").glob("*.yaml"))

GOOD = """\
id: {id}
title: Replay
description: Moves offsets.
flow: mq_runbooks.flows.kafka_replay:kafka_replay
parameters: mq_runbooks.flows.kafka_replay:ReplayParameters
risk: high
lock: "kafka:{{{{ cluster }}}}:group:{{{{ group }}}}"
approval: {{approvers: [alice], required: 1, self_approval: false, timeout: 10m}}
triggers:
  - matchers: ['alertname="Stuck"']
    params: {{cluster: "{{{{ labels.cluster }}}}", group: "{{{{ labels.group }}}}", to_latest: "true"}}
"""


def write_runbook(directory: Path, runbook_id: str = "replay", text: str | None = None, **replace: str) -> Path:
    body = text if text is not None else GOOD.format(id=runbook_id)
    for old, new in replace.items():
        body = body.replace(old, new)
    path = directory / f"{runbook_id}.yaml"
    path.write_text(body)
    return path


@pytest.mark.parametrize("path", CATALOG_FILES, ids=[p.stem for p in CATALOG_FILES])
def test_every_catalog_file_is_valid(path):
    runbook = load_runbook(path)
    assert runbook.id == path.stem
    assert runbook.flow_function is not None and hasattr(runbook.flow_function, "fn")
    assert runbook.parameter_names(), "a runbook takes typed parameters"
    assert runbook.approval.approvers and runbook.approval.timeout > 0
    for trigger in runbook.triggers:
        assert set(trigger.params) <= set(runbook.parameter_names())


def test_catalog_is_not_empty_and_ids_are_unique():
    catalog = load_catalog(REPO / "mq_runbooks" / "runbooks")
    assert len(catalog) == len(CATALOG_FILES) >= 1


def test_a_good_file_loads_and_validates_parameters(tmp_path):
    runbook = load_runbook(write_runbook(tmp_path))
    assert runbook.approval.timeout == 600
    params = runbook.validate_parameters({"cluster": "primary", "group": "billing", "topic": "orders:0,1",
                                          "to_offset": "5"})
    assert params.topic == ["orders:0,1"] and params.to_offset == 5
    assert runbook.lock_key(params) == "kafka:primary:group:billing"


def test_bad_parameters_name_every_field_and_what_is_allowed(tmp_path):
    runbook = load_runbook(write_runbook(tmp_path))
    with pytest.raises(ParameterError) as error:
        runbook.validate_parameters({"cluster": "primary", "colour": "red", "to_offset": "ten"})
    message = str(error.value)
    assert "colour: unknown parameter; replay takes: cluster, group, topic" in message
    assert "group: required, but missing" in message
    assert "to_offset: Input should be a valid integer" in message


@pytest.mark.parametrize("change, expected", [
    (("risk: high", "risk: extreme"), "risk: got 'extreme', allowed: 'low', 'medium' or 'high'"),
    (("risk: high", "risk: high\nowner: me"), "owner: unknown key (allowed: id, title"),
    (("flow: mq_runbooks.flows.kafka_replay:kafka_replay", "flow: flows.nope:run"), "flow: cannot import flows.nope:run"),
    (("flow: mq_runbooks.flows.kafka_replay:kafka_replay", "flow: just-a-name"), "flow: 'just-a-name' is not module:name"),
    (("parameters: mq_runbooks.flows.kafka_replay:ReplayParameters", "parameters: mq_runbooks.flows.kafka_replay:SPECS"),
     "parameters: mq_runbooks.flows.kafka_replay:SPECS is not a pydantic model class"),
    (('lock: "kafka:{{ cluster }}:group:{{ group }}"', 'lock: "kafka:{{ clustr }}"'),
     "lock: refers to clustr, not parameters (allowed: cluster, group"),
    (("group: \"{{ labels.group }}\"", "grp: \"{{ labels.group }}\""), "triggers[0].params.grp: not a parameter"),
    (("alertname=\"Stuck\"", "alertname==Stuck"), "is not a matcher"),
    (("timeout: 10m", "timeout: soon"), "'soon' is not a duration"),
    (("required: 1", "required: 0"), "approval.required: Input should be greater than or equal to 1"),
])
def test_bad_runbook_file_is_refused_naming_file_field_and_reason(tmp_path, change, expected):
    text = GOOD.format(id="replay").replace(*change)
    assert text != GOOD.format(id="replay"), "the change must apply"
    path = write_runbook(tmp_path, text=text)
    with pytest.raises(CatalogError) as error:
        load_runbook(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_id_must_match_file_name_and_be_unique(tmp_path):
    (tmp_path / "other.yaml").write_text(GOOD.format(id="replay"))
    with pytest.raises(CatalogError, match="id 'replay' must match the file name"):
        load_catalog(tmp_path)
    (tmp_path / "other.yaml").unlink()
    write_runbook(tmp_path)
    (tmp_path / "replay.yml").write_text(GOOD.format(id="replay"))
    with pytest.raises(CatalogError, match="id 'replay' is defined twice"):
        load_catalog(tmp_path)


def test_unknown_runbook_lists_the_known_ones(tmp_path):
    write_runbook(tmp_path)
    with pytest.raises(NotFoundError, match=r"no runbook 'nope'.*runbooks: replay"):
        load_catalog(tmp_path).get("nope")


def test_file_parameters_are_marked_and_never_mapped_from_an_alert(tmp_path):
    from mq_runbooks.app.alert_routing import route
    from mq_runbooks.base.catalog import Catalog, file_parameters, refuse_file_parameters
    from mq_runbooks.integrations.alerts import parse_alertmanager

    runbook = load_runbook(write_runbook(tmp_path))
    assert file_parameters(runbook) == ["from_file"]
    with pytest.raises(ParameterError, match="from_file: names a file on the server, which is never taken from Slack"):
        refuse_file_parameters(runbook, {"group": "g", "from_file": "/etc/passwd"}, "Slack")
    refuse_file_parameters(runbook, {"group": "g", "to_latest": "true"}, "Slack")  # no file: nothing to refuse

    # A trigger that maps an alert label onto a file parameter is refused when the catalog loads ...
    with pytest.raises(CatalogError, match=r"triggers\[0\]\.params\.from_file: names a file"):
        load_runbook(write_runbook(tmp_path, **{'to_latest: "true"': 'from_file: "{{ labels.file }}"'}))
    # ... and, should one get past it, routing refuses it before any run starts.
    sneaky = runbook.model_copy(update={"triggers": [runbook.triggers[0].model_copy(
        update={"params": {"cluster": "primary", "group": "g", "from_file": "{{ labels.file }}"}})]})
    sneaky._flow, sneaky._model = runbook._flow, runbook._model
    alert = {"status": "firing", "labels": {"alertname": "Stuck", "file": "/etc/passwd"},
             "startsAt": "2026-11-27T03:00:00Z", "fingerprint": "f1"}
    payload = {"version": "4", "status": "firing", "receiver": "runbooks", "alerts": [alert]}
    [parsed] = parse_alertmanager(json.dumps(payload).encode())
    started = []
    result = route([parsed], Catalog([sneaky], tmp_path), lambda *a, **k: started.append(a) or ("run", False),
                   lambda tag: [], lambda *a, **k: None, lambda key: key)
    assert started == [] and result.started == []
    [refused] = result.not_started
    assert "never taken from an alert" in refused["reason"]
