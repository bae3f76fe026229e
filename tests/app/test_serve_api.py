"""People act through `runbook serve`: its API (/api/v1) proves who asks by a personal token or a
trusted proxy's identity, judges and signs answers, and starts runs as the person it proved. The
CLI with RUNBOOK_SERVER uses it, holding a token and no Prefect credential at all."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mq_runbooks.app import runs
from mq_runbooks.kit import journal
from mq_runbooks.kit.identity import issue_token
from mq_runbooks.kit.postmortem.store import read_postmortem, save_draft
from tests.flows.runbook_harness import finished, paused, wait_until
from tests.flows.test_kafka_replay import committed, group_at_end, kafka_config  # noqa: F401 (fixtures)
from tests.serve_harness import ServeProcess, serve_environment

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


KEY = "serve-api-test-signing-key-0123456789"
RUNBOOK = str(Path(sys.executable).parent / "runbook")
NO_PREFECT = "http://127.0.0.1:9/api"  # the discard port: a CLI that tried Prefect would fail


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("serve-api")
    # The gates wait as long as the shipped runbook's do: no test here waits for a deadline, and on a loaded
    # machine the CLI calls a test makes while a run waits take longer than a short gate timeout.
    env = serve_environment(workdir, timeout="30m")
    env.update({"RUNBOOK_SIGNING_KEY": KEY, "RUNBOOK_TRUSTED_PROXIES": "127.0.0.1"})
    process = ServeProcess(workdir, env)
    tokens = {name: issue_token(env["RUNBOOK_DEPLOYMENT"], name, KEY.encode()) for name in ("alice", "bob")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUNBOOK_SIGNING_KEY", KEY)  # this test reads the journals serve's engine signed
        yield process, tokens
    process.stop()


def person(serve_url: str, token: str, *args: str) -> subprocess.CompletedProcess:
    """`runbook ARGS` as a person: serve's URL and their token, no Prefect credential or URL of ours."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("RUNBOOK_", "PREFECT_"))}
    env.update({"RUNBOOK_SERVER": serve_url, "RUNBOOK_TOKEN": token, "PREFECT_API_URL": NO_PREFECT, "COLUMNS": "200"})
    return subprocess.run([RUNBOOK, *args], capture_output=True, text=True, timeout=120, env=env)


def test_two_people_with_tokens_through_the_cli_and_no_prefect_credential(serve, group_at_end, kafka_config):
    (process, tokens), (topic, group) = serve, group_at_end
    started = person(process.url, tokens["alice"], "run", "kafka-replay", "-p", "cluster=primary", "-p",
                     f"group={group}", "-p", "to_earliest=true", "--json")
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = json.loads(started.stdout)["run_id"]
    view = wait_until(run_id, paused, timeout=90)
    assert view.requested_by == "alice"

    shown = person(process.url, tokens["bob"], "status", run_id[:8])
    assert shown.returncode == 0 and "Suspended" in shown.stdout and "waiting for" in shown.stdout, shown.stderr
    own = person(process.url, tokens["alice"], "approve", run_id)
    assert own.returncode == 2 and "alice started this run and may not approve it" in own.stderr, own.stderr
    other = person(process.url, tokens["alice"], "approve", run_id, "--as", "bob")
    assert other.returncode == 2 and "--as bob is not you" in other.stderr
    approved = person(process.url, tokens["bob"], "approve", run_id, "--comment", "billing is stopped")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "as bob (your token, through serve): approved by bob: billing is stopped" in approved.stdout

    view = wait_until(run_id, finished, timeout=90)
    assert view.succeeded, view.message
    assert [e.kind for e in view.entries].count("action") == 1, "acted once"
    assert journal.last(view.entries, "approval").data["proof"] == "token"
    assert committed(kafka_config, group) == {(topic, p): 0 for p in range(3)}

    nobody = person(process.url, "rbt_not-a-token", "status", run_id)
    assert nobody.returncode == 2 and "does not know who you are" in nobody.stderr and "Traceback" not in nobody.stderr


def test_a_restore_through_serve_plans_starts_and_is_approved_by_another_person(serve, group_at_end, kafka_config):
    (process, tokens), (topic, group) = serve, group_at_end
    before = committed(kafka_config, group)
    started = person(process.url, tokens["alice"], "run", "kafka-replay", "-p", "cluster=primary", "-p",
                     f"group={group}", "-p", "shift_by=-3", "--json")
    run_id = json.loads(started.stdout)["run_id"]
    wait_until(run_id, paused, timeout=90)
    assert person(process.url, tokens["bob"], "approve", run_id).returncode == 0
    assert wait_until(run_id, finished, timeout=90).succeeded

    shown = person(process.url, tokens["bob"], "restore", run_id[:8], "--plan")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "restore 3 of 3 saved value(s)" in shown.stdout and "cannot be undone" in shown.stdout
    restore = person(process.url, tokens["bob"], "restore", run_id, "--json")
    assert restore.returncode == 0, restore.stdout + restore.stderr
    restore_id = json.loads(restore.stdout)["run_id"]
    assert json.loads(restore.stdout)["restore_of"] == run_id
    assert wait_until(restore_id, paused, timeout=90).requested_by == "bob"
    own = person(process.url, tokens["bob"], "approve", restore_id)
    assert own.returncode == 2 and "bob started this run and may not approve it" in own.stderr, own.stderr
    assert person(process.url, tokens["alice"], "approve", restore_id).returncode == 0
    assert wait_until(restore_id, finished, timeout=90).succeeded
    assert committed(kafka_config, group) == before


def test_two_people_through_a_trusted_proxy(serve, group_at_end, kafka_config):
    (process, _), (topic, group) = serve, group_at_end
    api = f"{process.url}/api/v1"

    def as_person(email: str) -> dict[str, str]:
        return {"X-Forwarded-Email": email}

    assert httpx.get(f"{api}/whoami", headers=as_person("Alice@example.com")).json() == \
        {"name": "alice", "proof": "proxy-identity"}
    started = httpx.post(f"{api}/runs", headers=as_person("alice@example.com"), timeout=60, json={
        "runbook": "kafka-replay", "parameters": {"cluster": "primary", "group": group, "to_earliest": True}})
    assert started.status_code == 201, started.text
    run_id = started.json()["run_id"]
    assert wait_until(run_id, paused, timeout=90).requested_by == "alice"

    own = httpx.post(f"{api}/runs/{run_id}/approve", headers=as_person("alice@example.com"), json={}, timeout=90)
    assert own.status_code == 403 and "may not approve it" in own.json()["error"]
    approved = httpx.post(f"{api}/runs/{run_id}/approve", headers=as_person("bob@example.com"),
                          json={"comment": "ok"}, timeout=90)
    assert approved.status_code == 200, approved.text
    assert approved.json()["by"] == "bob" and approved.json()["proof"] == "proxy-identity"
    view = wait_until(run_id, finished, timeout=90)
    assert view.succeeded and [e.kind for e in view.entries].count("action") == 1
    assert committed(kafka_config, group) == {(topic, p): 0 for p in range(3)}


def test_the_api_says_what_is_wrong_and_never_answers_with_a_5xx(serve):
    process, tokens = serve
    api = f"{process.url}/api/v1"
    bob = {"Authorization": f"Bearer {tokens['bob']}"}
    assert httpx.get(f"{api}/whoami").status_code == 401, "no token, not through the proxy"
    assert httpx.get(f"{api}/whoami", headers={"Authorization": "Bearer rbt_forged"}).status_code == 401
    unknown = httpx.get(f"{api}/runs/ffffffff-ffff-ffff-ffff-ffffffffffff", headers=bob)
    assert unknown.status_code == 404 and "no run" in unknown.json()["error"]
    for body, expected in (({"runbook": "kafka-replya", "parameters": {}}, "kafka-replay"),
                           ({"runbook": "kafka-replay", "parameters": {"group": "g", "cluster": "nosuch", "to_earliest": True}},
                            "nosuch"),
                           ({"runbook": "kafka-replay", "parameters": "group=g"}, "parameters must be an object"),
                           ({"runbook": "kafka-replay", "parameters": {"group": "g", "from_file": "/etc/shadow"}},
                            "names a file on the server, which is never taken from serve's API"),
                           ("[" * 1000 + "]" * 1000, "nested deeper than 64")):
        answer = httpx.post(f"{api}/runs", headers=bob, timeout=30,
                            **({"json": body} if isinstance(body, dict) else {"content": body}))
        assert answer.status_code in (400, 404), (answer.status_code, answer.text)
        assert expected in answer.json()["error"], answer.json()
    assert not runs.list_runs(limit=5, runbook_id="kafka-replay", states=("paused",),
                              mine=lambda view: view.requested_by == "bob"), "bad input started no run"


def test_runs_and_cancel_through_serve(serve, group_at_end, kafka_config):
    (process, tokens), (topic, group) = serve, group_at_end
    started = person(process.url, tokens["alice"], "run", "kafka-replay", "-p", "cluster=primary", "-p",
                     f"group={group}", "-p", "to_earliest=true", "--json")
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = json.loads(started.stdout)["run_id"]
    wait_until(run_id, paused, timeout=90)

    listed = person(process.url, tokens["alice"], "runs", "--mine", "--waiting", "--json")
    assert listed.returncode == 0, listed.stderr
    mine = [item for item in json.loads(listed.stdout) if item["id"] == run_id]
    assert mine and mine[0]["requested_by"] == "alice" and mine[0]["state"] == "Suspended"
    piped = person(process.url, tokens["bob"], "runs", "--waiting", "--limit", "50")
    assert piped.returncode == 0 and any(line.startswith(run_id + "\t") for line in piped.stdout.splitlines())
    bad = person(process.url, tokens["bob"], "runs", "--state", "sleepy")
    assert bad.returncode == 2 and "sleepy" in bad.stderr

    cancelled = person(process.url, tokens["bob"], "cancel", run_id, "--reason", "recovered by itself")
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    view = runs.read_run(run_id)
    assert view.state_type == "CANCELLED" and "cancelled by bob" in view.message
    assert committed(kafka_config, group) == {(topic, p): 10 for p in range(3)}, "nothing was changed"


def test_doctor_says_how_the_cli_acts(serve):
    process, tokens = serve
    checked = person(process.url, tokens["alice"], "doctor")
    lines = checked.stdout.splitlines()
    assert any(line.startswith("mode\t") and "through serve as alice (token)" in line for line in lines), checked.stdout
    assert not any(line.startswith(("prefect\t", "workers")) for line in lines), "Prefect is serve's, not the person's"
    wrong = person(process.url, "rbt_forged", "doctor")
    assert wrong.returncode == 1 and "mode: through serve, but: runbook serve does not know who you are" in wrong.stdout + wrong.stderr


def test_plan_postmortems_and_tokens_through_serve(serve, group_at_end):
    (process, tokens), (topic, group) = serve, group_at_end
    args = ("-p", "cluster=primary", "-p", f"group={group}", "-p", "to_earliest=true")
    planned = person(process.url, tokens["alice"], "plan", "kafka-replay", *args, "--json")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    document = json.loads(planned.stdout)
    assert document["refusal"] is None and len(document["digest"]) == 64
    assert {(row["topic"], row["partition"], row["target"]) for row in document["rows"]} == \
        {(topic, p, 0) for p in range(3)}
    shown = person(process.url, tokens["alice"], "plan", "kafka-replay", *args)
    assert shown.returncode == 0 and f"plan digest {document['digest'][:12]}; nothing was changed" in shown.stdout
    wrong = person(process.url, tokens["alice"], "plan", "kafka-replay", "-p", "cluster=nosuch", "-p", f"group={group}",
                   "-p", "to_earliest=true")
    assert wrong.returncode == 2 and "nosuch" in wrong.stderr and "Traceback" not in wrong.stderr

    # Postmortems are serve's files: listed, shown and reviewed through it, the reviewer proven by the token.
    draft, _ = save_draft(Path(process.env["RUNBOOK_POSTMORTEM_DIR"]), "kafka-replay", "0123abcd-0000-0000-0000-"
                          + os.urandom(6).hex(), "succeeded", "# Replay\n\nWhat happened.\n")
    listed = person(process.url, tokens["bob"], "postmortems", "list", "--json")
    assert listed.returncode == 0 and draft.id in [item["id"] for item in json.loads(listed.stdout)], listed.stderr
    body = person(process.url, tokens["bob"], "postmortems", "show", draft.id)
    assert body.returncode == 0 and "What happened." in body.stdout
    other = person(process.url, tokens["bob"], "postmortems", "review", draft.id, "--as", "alice")
    assert other.returncode == 2 and "--as alice is not you" in other.stderr
    reviewed = person(process.url, tokens["bob"], "postmortems", "review", draft.id, "--note", "read it")
    assert reviewed.returncode == 0, reviewed.stdout + reviewed.stderr
    [reviewer] = read_postmortem(Path(process.env["RUNBOOK_POSTMORTEM_DIR"]), draft.id).reviewers
    assert reviewer["name"] == "bob" and reviewer["proof"]["kind"] == "token"

    # A person the proxy vouches for gets a token of their own; a token mints none; a holder revokes theirs.
    api = f"{process.url}/api/v1"
    issued = httpx.post(f"{api}/tokens/mine", headers={"X-Forwarded-Email": "carol@example.com"})
    assert issued.status_code == 201, issued.text
    carol = {"Authorization": f"Bearer {issued.json()['token']}"}
    assert httpx.get(f"{api}/whoami", headers=carol).json() == {"name": "carol", "proof": "token"}
    minted = httpx.post(f"{api}/tokens/mine", headers=carol)
    assert minted.status_code == 403 and "a token does not mint tokens" in minted.json()["error"]
    assert httpx.delete(f"{api}/tokens/mine", headers=carol).status_code == 200
    assert httpx.get(f"{api}/whoami", headers=carol).status_code == 401


def test_a_token_file_others_may_read_is_refused_in_doctor_too(serve, tmp_path):
    process, tokens = serve
    token_file = tmp_path / "token"
    token_file.write_text(tokens["alice"])
    token_file.chmod(0o644)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RUNBOOK_", "PREFECT_"))}
    env.update({"RUNBOOK_SERVER": process.url, "RUNBOOK_TOKEN_FILE": str(token_file), "PREFECT_API_URL": NO_PREFECT})
    checked = subprocess.run([RUNBOOK, "doctor"], capture_output=True, text=True, timeout=120, env=env)
    assert checked.returncode == 1 and "may be read by others" in checked.stdout + checked.stderr, checked.stdout
    token_file.chmod(0o600)
    checked = subprocess.run([RUNBOOK, "doctor"], capture_output=True, text=True, timeout=120, env=env)
    assert "through serve as alice (token)" in checked.stdout, checked.stdout + checked.stderr
