"""The `runbook` command as a person runs it: the real console script, against the real stack."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = Path(sys.executable).parent / "runbook"
COMMANDS = ["list", "show", "doctor", "plan", "run", "approve", "reject", "runs", "status", "restore", "serve", "demo", "postmortems", "tokens"]


def runbook(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUNBOOK), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command):
    result = runbook(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: runbook" in result.stdout


def test_list_and_show_read_the_catalog():
    listed = runbook("list", "--json")
    assert listed.returncode == 0, listed.stderr
    ids = [item["id"] for item in json.loads(listed.stdout)]
    assert "kafka-replay" in ids
    shown = runbook("show", "kafka-replay")
    assert shown.returncode == 0, shown.stderr
    for expected in ("to_datetime", "wait_for_inactive", "approval: 1 of @kafka-oncall",
                     "lock: one run at a time per kafka:<cluster>:group:<group>"):
        assert expected in shown.stdout


def test_show_renders_what_the_yaml_says_in_words():
    shown = runbook("show", "kafka-replay")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "times out after 30m" in out and "1800" not in out
    assert "{{" not in out and "Literal[" not in out and "typing" not in out and "<class" not in out
    assert "started by alerts matching alertname=\"KafkaConsumerGroupStuck\", severity=~\"page|critical\"" in out
    assert "cluster = the alert's label cluster; group = the alert's label consumergroup; by_duration = PT15M" in out
    assert "wait_for_inactive: number >= 0 and <= 3600; default: 0" in out
    assert "to_offset: whole number >= 0; default: none" in out
    assert "topic: list of text; default: none" in out
    failover = runbook("show", "kafka-failover").stdout
    assert "untranslatable: one of refuse, by_timestamp; default: refuse" in failover
    assert "groups: list of text, at least 1; required" in failover


def test_show_on_a_narrow_terminal_keeps_every_parameter_name_whole():
    # `script` gives the command a terminal of 80 columns, as a person has.
    result = subprocess.run(["script", "-qec", f"{RUNBOOK} show rabbitmq-drain-stuck", "/dev/null"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stdout
    for name in ("idle_threshold_s", "verify_window_s", "poison_after", "parking_queue", "backlog_to"):
        assert f"{name}:" in result.stdout, name
    assert "…" not in result.stdout


def test_version_is_the_package_version():
    from mq_runbooks import __version__

    result = runbook("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"runbook {__version__}"


@pytest.mark.parametrize("args", [["--help"], ["list"], ["runs", "--help"], ["postmortems", "list", "--help"],
                                  ["show", "kafka-replay"], ["show", "--json", "rabbitmq-failover"]])
def test_commands_that_need_no_prefect_do_not_import_it(args):
    code = ("import sys\nsys.argv = ['runbook', *sys.argv[1:]]\nfrom mq_runbooks.app.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('IMPORTED PREFECT' if 'prefect' in sys.modules else 'NO PREFECT', file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert "NO PREFECT" in result.stderr, result.stderr
    assert result.stdout.strip(), result.stderr  # the command answered (an error would leave stdout empty)
    if args[0] == "show":
        assert "cluster" in result.stdout, result.stdout  # a parameter, read from the runbook's model


def test_unknown_runbook_is_bad_input_with_the_known_ids():
    result = runbook("show", "kafka-replya")
    assert result.returncode == 2
    assert "no runbook 'kafka-replya'" in result.stderr and "kafka-replay" in result.stderr
    assert "did you mean kafka-replay?" in result.stderr


def test_a_misspelt_parameter_is_one_error_with_a_suggestion():
    result = runbook("plan", "kafka-replay", "-p", "cluster=primary", "-p", "group=g", "-p", "to_earlist=true")
    assert result.returncode == 2
    assert "to_earlist: unknown parameter; kafka-replay takes: cluster, group" in result.stderr
    assert "did you mean to_earliest" in result.stderr
    assert "reset spec" not in result.stderr  # not a second, misleading error from the model
    assert result.stderr.count("\n  ") == 1, result.stderr


def test_a_misspelt_cluster_gets_a_suggestion():
    result = runbook("plan", "kafka-replay", "-p", "cluster=primray", "-p", "group=g", "-p", "to_latest=true")
    assert result.returncode == 2
    assert "no kafka cluster named 'primray'" in result.stderr and "did you mean primary?" in result.stderr


def test_doctor_reports_every_service_of_the_stack_reachable(clusters):
    result = runbook("doctor", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {check["component"]: check for check in json.loads(result.stdout)}
    assert set(checks) == {"catalog", "prefect", "work pool mq-runbooks", "kafka primary", "kafka standby",
                           "mirrormaker2 primary -> standby", "rabbitmq primary", "rabbitmq standby", "redis primary",
                           "redis replica", "artemis primary", "artemis backup", "rocketmq primary", "switch kafka-clients",
                           "switch rabbit-clients", "switch artemis-clients", "slack", "teams", "mode", "signing key"}
    assert checks["mode"]["status"] == "direct" and checks["teams"]["ok"] and checks["signing key"]["ok"]
    assert all(check["ok"] for check in checks.values() if check["required"])
    assert not checks["work pool mq-runbooks"]["required"]  # whether a worker runs here or not
    assert "RabbitMQ 3." in checks["rabbitmq primary"]["detail"]
    assert checks["catalog"]["detail"] == f"{len(list((REPO / 'mq_runbooks' / 'runbooks').glob('*.yaml')))} runbook(s) load"
    assert checks["slack"]["status"] == "not configured" and not checks["slack"]["required"]
    mm2 = checks["mirrormaker2 primary -> standby"]
    assert mm2["status"] == "running" and mm2["data"]["heartbeat_age_s"] < 60
    assert all(age >= 0 for age in mm2["data"]["checkpoint_age_s"].values())
    assert "writable" in checks["switch kafka-clients"]["detail"]


def test_doctor_names_a_broken_runbook_and_an_unwritable_switch_and_exits_1(tmp_path):
    catalog = tmp_path / "runbooks"
    catalog.mkdir()
    (catalog / "kafka-replay.yaml").write_text((REPO / "mq_runbooks" / "runbooks" / "kafka-replay.yaml").read_text())
    (catalog / "broken.yaml").write_text("id: broken\ntitle: x\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "clients.json").write_text("{}")
    (locked / "clients.json").chmod(0o444)
    locked.chmod(0o555)
    config = tmp_path / "clusters.yaml"
    config.write_text(f"""
switches:
  ro: {{kind: file, path: "{locked / 'clients.json'}", key: k, values: {{a: "1"}}}}
""")
    try:
        result = runbook("doctor", "--json", env={"RUNBOOK_CATALOG": str(catalog), "RUNBOOK_CLUSTERS": str(config)})
    finally:
        locked.chmod(0o755)
    checks = {check["component"]: check for check in json.loads(result.stdout)}
    assert result.returncode == 1, result.stderr
    assert not checks["catalog"]["ok"] and checks["catalog"]["detail"] == "1 runbook(s) load, 1 broken"
    assert "description: required, but missing" in checks["runbook broken"]["detail"]
    assert "problem: runbook broken:" in result.stderr
    if os.geteuid() != 0:  # root writes anywhere: the check can only fail for others
        assert checks["switch ro"]["status"] == "NOT WRITABLE"


def test_doctor_shows_unreachable_clusters_with_the_reason_and_exits_1(tmp_path):
    config = tmp_path / "clusters.yaml"
    config.write_text("""
kafka:
  gone: {bootstrap_servers: "127.0.0.1:1"}
rabbitmq:
  gone: {amqp_url: "amqp://guest:topsecret@127.0.0.1:2/", management_url: "http://127.0.0.1:3"}
""")
    result = runbook("doctor", "--timeout", "2", env={"RUNBOOK_CLUSTERS": str(config)})
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout.count("UNREACHABLE") == 2
    assert "kafka gone" in result.stdout and "rabbitmq gone" in result.stdout
    assert "topsecret" not in result.stdout + result.stderr


def test_malformed_clusters_file_is_bad_input_naming_file_and_field(tmp_path):
    config = tmp_path / "clusters.yaml"
    config.write_text("kafka:\n  primary: {bootstrap: '127.0.0.1:19092'}\n")
    result = runbook("doctor", env={"RUNBOOK_CLUSTERS": str(config)})
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "kafka.primary.bootstrap: unknown key" in result.stderr
    assert "kafka.primary.bootstrap_servers: required, but missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_list_marks_a_broken_runbook_file_and_names_file_and_field(tmp_path):
    (tmp_path / "kafka-replay.yaml").write_text((REPO / "mq_runbooks" / "runbooks" / "kafka-replay.yaml").read_text())
    (tmp_path / "broken.yaml").write_text("id: broken\ntitle: x\n")
    result = runbook("list", env={"RUNBOOK_CATALOG": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()[1:]]
    assert rows[0][0] == "kafka-replay" and rows[1][:2] == ["broken", f"BROKEN: {tmp_path / 'broken.yaml'}"]
    assert str(tmp_path / "broken.yaml") in result.stderr and "description: required, but missing" in result.stderr
    listed = json.loads(runbook("list", "--json", env={"RUNBOOK_CATALOG": str(tmp_path)}).stdout)
    assert [item["id"] for item in listed] == ["kafka-replay", "broken"] and "broken" in listed[1]


def test_a_broken_runbook_file_stops_commands_that_run_runbooks(tmp_path):
    (tmp_path / "broken.yaml").write_text("id: broken\ntitle: x\n")
    result = runbook("show", "broken", env={"RUNBOOK_CATALOG": str(tmp_path)})
    assert result.returncode == 2
    assert str(tmp_path / "broken.yaml") in result.stderr and "description: required, but missing" in result.stderr
