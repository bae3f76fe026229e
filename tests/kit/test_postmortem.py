"""Postmortem drafts without a run: secrets scrubbed, StrictUndefined templates, team overrides, the
store (front matter, idempotent drafts, reviews) and the CLI over it; plus, against the real
Prefect server, the draft of a run that crashed before recording anything."""
from __future__ import annotations

import datetime as dt
import json
from uuid import UUID

import pytest
from click.testing import CliRunner
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import LogCreate
from prefect.states import Crashed

from mq_runbooks.app.cli import cli
import mq_runbooks.app.cli_postmortems  # noqa: F401  (registers `runbook postmortems`)
from mq_runbooks.base.errors import ConfigError, NotFoundError, UsageError
from mq_runbooks.kit.postmortem.context import render_draft
from mq_runbooks.kit.postmortem.draft import draft_postmortem
from mq_runbooks.kit.postmortem.records import LogLine, RunRecords, StateChange, read_records
from mq_runbooks.kit.postmortem.store import list_postmortems, mark_reviewed, read_postmortem, save_draft
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit import journal
from mq_runbooks.kit.journal import Entry
from mq_runbooks.kit.records import Start
from mq_runbooks.kit.postmortem.publish import write_postmortem

T0 = dt.datetime(2026, 11, 27, 3, 0, 0, tzinfo=dt.timezone.utc)
RUN_ID = "1a2b3c4d-0000-4000-8000-000000000001"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def records(entries: list[Entry], log_message: str = "done", **extra) -> RunRecords:
    return RunRecords(
        run_id=RUN_ID, runbook="kafka-replay", name="calm-otter", created=at(-5), started=at(0), ended=at(60),
        state_name="Completed", state_type="COMPLETED", state_message="", entries=entries,
        states=[StateChange(at(0), "Running", "RUNNING", ""), StateChange(at(60), "Completed", "COMPLETED", "")],
        log_lines=1, log_tail=[LogLine(at(59), "INFO", "prefect.flow_runs", log_message)], **extra)


def secret_laden_run() -> list[Entry]:
    trigger = {"alertname": "KafkaConsumerGroupStuck", "source": "alertmanager", "status": "firing",
               "startsAt": at(-120).isoformat(), "labels": {"consumergroup": "billing"},
               "annotations": {"description": "connect with amqp://ops:Pa55w0rd!x@rabbit:5672/ now",
                               "auth": "Authorization: Bearer abcdef0123456789", "sasl_password": "saslSecret9"}}
    return [
        Entry(at(1), "parameters", "kafka-replay on primary/billing, requested by alice", {
            "runbook": "kafka-replay", "requested_by": "alice", "trigger": trigger,
            "parameters": {"group": "billing", "api_token": "tok-123456789", "dsn": "amqps://u:dsnpass77@h/v"}}),
        Entry(at(2), "observation", "sampled 1 poison message", {"value": "card=4111111111111111"}),
        Entry(at(3), "note", "consumer logged body=cardnumber4111 and password=hunter22", {}),
        Entry(at(50), "outcome", "done", {"outcome": "succeeded"}),
    ]


def settings_for(tmp_path, **env) -> Settings:
    return Settings.from_environ({"RUNBOOK_POSTMORTEM_DIR": str(tmp_path / "pm"), "PREFECT_API_URL": "http://x/api",
                                  "RUNBOOK_ALERT_TOKEN": "alertTokenXYZ", **env})


def test_secrets_never_appear_in_a_draft(tmp_path):
    settings = settings_for(tmp_path)
    outcome, body = render_draft(records(secret_laden_run(), "posted with alertTokenXYZ to the webhook"), settings)
    assert outcome == "succeeded"
    for secret in ("Pa55w0rd!x", "abcdef0123456789", "saslSecret9", "tok-123456789", "dsnpass77", "hunter22",
                   "alertTokenXYZ", "4111"):
        assert secret not in body, secret
    assert "amqp://ops:[REDACTED]@rabbit:5672/" in body and "`dsn` = `amqps://u:[REDACTED]@h/v`" in body
    assert "`api_token` = `[REDACTED]`" in body and "`group` = `billing`" in body
    assert "posted with [REDACTED] to the webhook" in body


def test_a_plan_of_100000_rows_leaves_the_draft_readable_with_the_whole_plan_one_command_away(tmp_path):
    rows = [f"billing-dead,1796677452537-{i},22245,1,claim to billing-healthy" for i in range(100_000)]
    csv = "consumer,entry id,idle ms,deliveries,action\n" + "\n".join(rows)
    markdown = "| consumer | entry id |\n|---|---|\n" + "\n".join(f"| billing-dead | 1796677452537-{i} |"
                                                              for i in range(100_000))
    entries = [Entry(at(1), "plan", "100000 stuck entries", {"csv": csv, "markdown": markdown, "digest": "d1"}),
               Entry(at(5), "snapshot", "pending entries saved", {"csv": csv, "path": "/snap/x.json"}),
               Entry(at(50), "outcome", "done", {"outcome": "succeeded"})]
    _, body = render_draft(records(entries), settings_for(tmp_path))
    assert len(body) < 100_000, "the draft does not grow with the plan (Prefect refuses an artifact event over 1.5 MB)"
    assert "| billing-dead | 1796677452537-197 |" in body and "| billing-dead | 1796677452537-198 |" not in body
    assert "billing-dead,1796677452537-198," in body and "billing-dead,1796677452537-199," not in body
    assert f"... and 99,802 more line(s): `runbook status {RUN_ID} --plan` shows the whole plan" in body
    assert "... and 99,801 more line(s): the snapshot file /snap/x.json holds all of it" in body


def test_message_values_appear_only_when_allowed(tmp_path):
    entries = secret_laden_run()
    _, withheld = render_draft(records(entries), settings_for(tmp_path))
    assert "body=[message value withheld]" in withheld
    _, allowed = render_draft(records(entries), settings_for(tmp_path), allow_message_values=True)
    assert "body=cardnumber4111" in allowed and "hunter22" not in allowed


def test_a_template_naming_a_missing_field_fails_loudly(tmp_path):
    team = tmp_path / "team-templates"
    team.mkdir()
    (team / "_team.md.j2").write_text("## Root cause\n\nOwner: {{ run.owner_team }}\n")
    with pytest.raises(ConfigError, match="owner_team"):
        render_draft(records(secret_laden_run()), settings_for(tmp_path, RUNBOOK_POSTMORTEM_TEMPLATES=str(team)))


def test_a_team_overrides_one_partial_and_keeps_the_rest(tmp_path):
    team = tmp_path / "team-templates"
    team.mkdir()
    (team / "_team.md.j2").write_text("## Five whys ({{ run.runbook }})\n\nTO WRITE\n")
    _, body = render_draft(records(secret_laden_run()), settings_for(tmp_path, RUNBOOK_POSTMORTEM_TEMPLATES=str(team)))
    assert "## Five whys (kafka-replay)" in body and "## Root cause" not in body
    assert "## Timeline (UTC)" in body and "## Impact" in body


def test_the_store_is_idempotent_per_run_and_never_rewrites_a_reviewed_postmortem(tmp_path):
    directory = tmp_path / "pm"
    first, written = save_draft(directory, "kafka-replay", RUN_ID, "failed", "# one\n", now=at(0))
    assert written and first.path.name == "2026-11-27-kafka-replay-1a2b3c4d.md"
    assert first.meta == {"id": "2026-11-27-kafka-replay-1a2b3c4d", "runbook": "kafka-replay", "run_id": RUN_ID,
                          "status": "draft", "reviewers": [], "created": "2026-11-27T03:00:00Z", "outcome": "failed"}
    again, written = save_draft(directory, "kafka-replay", RUN_ID, "failed", "# two\n", now=at(86400))
    assert written and again.path == first.path and again.meta["created"] == "2026-11-27T03:00:00Z"
    assert read_postmortem(directory, again.id).body == "# two\n"
    reviewed = mark_reviewed(directory, again.id, "dave", "action items added", now=at(90000))
    assert reviewed.status == "reviewed"
    assert reviewed.reviewers == [{"name": "dave", "at": "2026-11-28T04:00:00Z", "note": "action items added"}]
    kept, written = save_draft(directory, "kafka-replay", RUN_ID, "failed", "# three\n")
    assert not written and kept.path.read_text() == reviewed.text()
    second = mark_reviewed(directory, again.id, "erin", "")
    assert [r["name"] for r in second.reviewers] == ["dave", "erin"]


def test_list_filters_and_bad_ids(tmp_path):
    directory = tmp_path / "pm"
    save_draft(directory, "kafka-replay", RUN_ID, "succeeded", "x", now=at(0))
    other = save_draft(directory, "rabbitmq-failover", "9f9f9f9f-0000-4000-8000-000000000002", "failed", "y",
                       now=at(10))[0]
    mark_reviewed(directory, other.id, "dave")
    assert [p.runbook for p in list_postmortems(directory)] == ["rabbitmq-failover", "kafka-replay"]
    assert [p.id for p in list_postmortems(directory, status="draft")] == ["2026-11-27-kafka-replay-1a2b3c4d"]
    assert [p.id for p in list_postmortems(directory, runbook="rabbitmq-failover", status="reviewed")] == [other.id]
    with pytest.raises(UsageError, match="status 'done' is not one of draft, reviewed"):
        list_postmortems(directory, status="done")
    with pytest.raises(NotFoundError, match="is not a postmortem id"):
        read_postmortem(directory, "../../etc/passwd")
    with pytest.raises(UsageError, match="reviewer's name"):
        mark_reviewed(directory, other.id, " ")
    (directory / "2026-11-27-broken-00000000.md").write_text("no front matter\n")
    (directory / "README.md").write_text("# Our postmortems\n")
    # Files that are not postmortems are left out of the list (with a warning), never fail it ...
    assert [p.runbook for p in list_postmortems(directory)] == ["rabbitmq-failover", "kafka-replay"]
    # ... while reading a broken one by its id names what is wrong.
    with pytest.raises(ConfigError, match="broken-00000000.md: a postmortem starts with YAML front matter"):
        read_postmortem(directory, "2026-11-27-broken-00000000")


def test_cli_lists_shows_and_reviews(tmp_path, monkeypatch):
    directory = tmp_path / "pm"
    monkeypatch.setenv("RUNBOOK_POSTMORTEM_DIR", str(directory))
    monkeypatch.setenv("COLUMNS", "160")  # a terminal wide enough for the whole table
    draft = save_draft(directory, "kafka-replay", RUN_ID, "failed", "# Postmortem\n\nbody\n", now=at(0))[0]
    runner = CliRunner()
    listed = runner.invoke(cli, ["postmortems", "list", "--status", "draft", "--json"], catch_exceptions=False)
    assert [p["id"] for p in json.loads(listed.output)] == [draft.id]
    shown = runner.invoke(cli, ["postmortems", "show", draft.id], catch_exceptions=False)
    assert shown.output == draft.path.read_text()
    reviewed = runner.invoke(cli, ["postmortems", "review", draft.id, "--as", "dave", "--note", "ok"],
                             catch_exceptions=False)
    assert reviewed.exit_code == 0 and f"{draft.id} reviewed by dave" in reviewed.output
    table = runner.invoke(cli, ["postmortems", "list", "--runbook", "kafka-replay"], catch_exceptions=False)
    assert draft.id in table.output and "reviewed" in table.output and "dave" in table.output
    assert runner.invoke(cli, ["postmortems", "list", "--status", "draft", "--json"]).output.strip() == "[]"
    missing = runner.invoke(cli, ["postmortems", "show", "2026-01-01-kafka-replay-00000000"])
    assert isinstance(missing.exception, NotFoundError)


@pytest.fixture
def crashed_run(clusters):
    """A real flow run that crashed before its flow recorded anything but its parameters."""
    from mq_runbooks.flows.kafka_replay import kafka_replay

    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(kafka_replay, parameters={}, tags=["runbook:kafka-replay"])
        client.set_flow_run_state(flow_run.id, Crashed(message="executor process was killed"), force=True)
    journal.write(flow_run.id, Start(summary="kafka-replay on primary/billing, requested by alice", runbook="kafka-replay",
                                     requested_by="alice", parameters={"group": "billing"}, target="primary/billing"))
    return str(flow_run.id)


def test_a_crashed_run_is_drafted_when_noticed(crashed_run, tmp_path):
    settings = settings_for(tmp_path, PREFECT_API_URL="")
    postmortem, written = draft_postmortem(settings, crashed_run)
    assert written and postmortem.meta["outcome"] == "crashed"
    assert ("**crashed**: the run ended Crashed without recording its outcome: executor process was killed"
            in postmortem.body)


@pytest.mark.parametrize("lines", [1234, 400, 200, 199])
def test_a_long_log_is_counted_exactly_and_only_its_warnings_and_last_lines_are_kept(crashed_run, lines):
    """Prefect has no count of logs: the records count by probing offsets (exactly, also at a page
    boundary and under one page), keep the first warnings and the last lines, without routine ones."""
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    logs = []
    for i in range(lines):
        routine = i % 3 == 0
        logs.append(LogCreate(
            name="prefect.task_runs" if routine else "prefect.flow_runs",
            level=30 if i % 40 == 1 and not routine else 20, flow_run_id=UUID(crashed_run),
            message="Finished in state Completed()" if routine else f"line {i}",
            timestamp=start + dt.timedelta(milliseconds=10 * i)))
    with get_client(sync_client=True) as client:
        client.create_logs(logs)
    read = read_records(crashed_run)
    assert read.log_lines == lines
    kept = [f"line {i}" for i in range(lines) if i % 3 != 0]
    assert [line.message for line in read.log_tail] == kept[-50:]
    warnings = [f"line {i}" for i in range(lines) if i % 40 == 1 and i % 3 != 0]
    assert [line.message for line in read.notable_logs] == warnings[:20]
    assert all(line.level == "WARNING" for line in read.notable_logs)


def test_write_postmortem_never_raises_and_notes_the_failure(crashed_run, tmp_path):
    team = tmp_path / "broken"
    team.mkdir()
    (team / "postmortem.md.j2").write_text("{{ nothing_here }}")
    settings = settings_for(tmp_path, RUNBOOK_POSTMORTEM_TEMPLATES=str(team), PREFECT_API_URL="")
    assert write_postmortem(crashed_run, settings) is None
    note = journal.last(journal.read(crashed_run), "note")
    assert "postmortem draft not written" in note.summary and "nothing_here" in note.summary
    assert f"runbook postmortems draft {crashed_run}" in note.summary
    assert write_postmortem("not-a-run-id", settings) is None


def test_recovery_is_measured_to_the_alert_resolving_and_a_timeout_is_named(tmp_path):
    entries = secret_laden_run() + [
        Entry(at(40), "verification", "read back 3 offset(s): all as planned", {"partitions_checked": 3}),
        Entry(at(200), "alert_resolved", "alert KafkaConsumerGroupStuck resolved",
              {"alertname": "KafkaConsumerGroupStuck", "endsAt": at(180).isoformat()})]
    _, body = render_draft(records(entries), settings_for(tmp_path))
    assert ("| time from the alert's start to recovery | 5m 00s (2026-11-27T02:58:00.000Z to "
            "2026-11-27T03:03:00.000Z, alert resolved) | alert, journal |") in body
    assert "| 2026-11-27T03:03:00.000Z | alert | alert KafkaConsumerGroupStuck resolved |" in body
    assert "| 2026-11-27T02:58:00.000Z | alert | alert KafkaConsumerGroupStuck fired (consumergroup=billing) |" in body
    assert " caused " not in body and "blame" not in body.lower()

    timed_out = [secret_laden_run()[0],
                 Entry(at(30), "rejection", "nobody approved within 30s: rejected by timeout", {"by": "timeout"}),
                 Entry(at(31), "outcome", "timed out; nothing was changed", {"outcome": "rejected"})]
    outcome, body = render_draft(records(timed_out), settings_for(tmp_path))
    assert outcome == "timed out" and "**timed out**: timed out; nothing was changed" in body
    assert "- 2026-11-27T03:00:30.000Z: nobody approved within 30s: rejected by timeout" in body


def test_the_console_script_exits_2_for_an_unknown_postmortem_or_run(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    runbook = Path(sys.executable).parent / "runbook"
    env = {**os.environ, "RUNBOOK_POSTMORTEM_DIR": str(tmp_path)}
    shown = subprocess.run([str(runbook), "postmortems", "show", "2026-01-01-kafka-replay-00000000"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 2 and "no postmortem 2026-01-01-kafka-replay-00000000" in shown.stderr
    drafted = subprocess.run([str(runbook), "postmortems", "draft", "not-a-run"], capture_output=True, text=True,
                             env=env, timeout=60)
    assert drafted.returncode == 2 and "'not-a-run' is not a run id" in drafted.stderr


def test_data_at_risk_comes_from_the_plan_when_it_measured_it(tmp_path):
    entries = secret_laden_run()[:1] + [
        Entry(at(5), "plan", "fail over 2 group(s)", {"messages_at_risk": 42, "at_risk_exact": False, "csv": ""})]
    _, body = render_draft(records(entries), settings_for(tmp_path))
    assert "| data at risk | 42 message(s) at risk when planned (an estimate) | plan, rollback |" in body


def section_of(body: str, title: str) -> str:
    start = body.index(f"## {title}\n")
    end = body.find("\n## ", start + 1)
    return body[start:] if end < 0 else body[start:end]


def approved_run(run_id: str = RUN_ID, fired_s: float = -120, consumergroup: str = "billing") -> RunRecords:
    """A whole approved run as recorded: journal, flow and task states, a warning."""
    trigger = {"alertname": "KafkaConsumerGroupStuck", "startsAt": at(fired_s).isoformat(), "fingerprint": "f1",
               "labels": {"alertname": "KafkaConsumerGroupStuck", "severity": "page", "cluster": "primary",
                          "consumergroup": consumergroup}}
    entries = [
        Entry(at(1), "parameters", f"kafka-replay on primary/{consumergroup}, requested by alert:X",
              {"requested_by": "alert:KafkaConsumerGroupStuck", "trigger": trigger, "target": f"primary/{consumergroup}"}),
        Entry(at(2), "lock", "holding kafka:primary:group:billing", {}),
        Entry(at(3), "observation", "read 3 partitions", {}),
        Entry(at(4), "plan", "3 of 3 partition(s) to move", {}),
        Entry(at(5), "approval_requested", "waiting for 1 of @kafka-oncall", {}),
        Entry(at(6), "slack", "posted the approval request", {"ok": True}),
        Entry(at(20), "approval", "approved by carol: go", {"by": "carol"}),
        Entry(at(21), "note", "the approved plan still holds; drift: log end 10 -> 12", {}),
        Entry(at(22), "snapshot", "snapshot saved", {}),
        Entry(at(23), "action", "altered 3 partition offset(s)", {}),
        Entry(at(24), "verification", "read back 3 offset(s): all as planned", {}),
        Entry(at(25), "outcome", "offsets reset", {"outcome": "succeeded"}),
        Entry(at(26), "postmortem", "draft written", {}),
        Entry(at(200), "alert_resolved", "alert KafkaConsumerGroupStuck resolved", {"endsAt": at(180).isoformat()}),
    ]
    return RunRecords(
        run_id=run_id, runbook="kafka-replay", name=f"kafka-replay primary/{consumergroup}", created=at(0),
        started=at(0), ended=at(27), state_name="Completed", state_type="COMPLETED", state_message="",
        entries=entries,
        states=[StateChange(at(0), "Pending", "PENDING", ""), StateChange(at(0.5), "Running", "RUNNING", ""),
                StateChange(at(5.5), "Suspended", "PAUSED", ""), StateChange(at(21), "Running", "RUNNING", ""),
                StateChange(at(23), "Completed", "COMPLETED", "", task="alter-offsets"),
                StateChange(at(27), "Completed", "COMPLETED", "")],
        log_lines=1, notable_logs=[LogLine(at(7), "WARNING", "prefect.flow_runs", "slow answer from Slack")])


def test_the_timeline_is_what_people_read_and_the_full_record_keeps_prefects_states(tmp_path):
    _, body = render_draft(approved_run(), settings_for(tmp_path))
    assert body.startswith("# Postmortem (draft): kafka-replay on primary/billing, 2026-11-27, succeeded\n")
    timeline = [line.split(" | ")[1:] for line in section_of(body, "Timeline (UTC)").splitlines()
                if line.startswith("| 20")]
    assert [row[1].rstrip(" |").split(":")[0] for row in timeline] == [
        "alert KafkaConsumerGroupStuck fired (cluster=primary, consumergroup=billing)", "parameters", "plan",
        "approval_requested", "approval", "snapshot", "action", "verification", "outcome",
        "alert KafkaConsumerGroupStuck resolved"]
    assert not [row for row in timeline if row[0].startswith("Prefect")], "state changes are folded away"
    record = section_of(body, "Full record (UTC)")
    for line in ("| Prefect flow run | state Suspended |", "| Prefect task run | alter-offsets Completed |",
                 "| Prefect log | WARNING slow answer from Slack |", "| journal | lock: holding",
                 "| journal | note: the approved plan still holds", "| journal | approval: approved by carol"):
        assert line in record, line
    stamps = [line.split(" | ")[0] for line in record.splitlines() if line.startswith("| 20")]
    assert stamps == sorted(stamps) and len(stamps) == 22  # the alert, 14 entries, 6 states, 1 warning


def test_a_crashed_run_ends_its_timeline_with_prefects_final_state(tmp_path):
    crashed = approved_run()
    crashed.entries = crashed.entries[:9]  # up to the snapshot, then the process died
    crashed.state_name, crashed.state_type, crashed.state_message = "Crashed", "CRASHED", "no heartbeat"
    crashed.states = crashed.states[:4] + [StateChange(at(90), "Crashed", "CRASHED", "no heartbeat")]
    _, body = render_draft(crashed, settings_for(tmp_path))
    assert section_of(body, "Timeline (UTC)").rstrip().endswith(
        "| 2026-11-27T03:01:30.000Z | Prefect flow run | ended Crashed: no heartbeat |")


def test_an_incident_timeline_names_each_run_and_an_alert_shared_by_runs_names_them_all(tmp_path):
    from mq_runbooks.kit.postmortem.context import build_context, scrubber_for
    from mq_runbooks.kit.postmortem.incident import incident_context
    from mq_runbooks.kit.postmortem.render import render

    settings = settings_for(tmp_path)
    first, second = "1a2b3c4d-0000-4000-8000-000000000001", "5e6f7a8b-0000-4000-8000-000000000002"
    other = approved_run(second, consumergroup="payments")
    contexts = [build_context(approved_run(first), scrubber_for(settings), settings),
                build_context(other, scrubber_for(settings), settings)]
    context = incident_context(contexts)
    body = render(context, None, "incident.md.j2")
    assert body.startswith("# Postmortem (draft): incident KafkaConsumerGroupStuck on primary/billing, "
                           "primary/payments, 2026-11-27, succeeded\n")
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")]
            for line in section_of(body, "Timeline (UTC)").splitlines() if line.startswith("| 20")]
    fired = [row for row in rows if "fired" in row[3]]
    assert [(row[1], row[3]) for row in fired] == [
        ("`1a2b3c4d`", "alert KafkaConsumerGroupStuck fired (cluster=primary, consumergroup=billing)"),
        ("`5e6f7a8b`", "alert KafkaConsumerGroupStuck fired (cluster=primary, consumergroup=payments)")]
    resolved = [row for row in rows if "resolved" in row[3]]
    assert [row[1] for row in resolved] == ["`1a2b3c4d`, `5e6f7a8b`"], "one resolve reached both runs: one row naming both"
    assert {row[1] for row in rows if row[2] == "journal"} == {"`1a2b3c4d`", "`5e6f7a8b`"}
    assert not [row for row in rows if row[2].startswith("Prefect")]
    assert "| `5e6f7a8b` | Prefect flow run | state Suspended |" in section_of(body, "Full record (UTC)")
