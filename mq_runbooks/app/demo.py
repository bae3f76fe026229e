"""`runbook demo`: a whole incident on the local stack, in about a minute.

A billing consumer group processes orders; deploy v2 of billing has a bug that commits orders
without billing them. An Alertmanager-shaped alert reaches `runbook serve`, which starts
`kafka-replay` (the last 15 minutes); the plan waits at the gate; a second person (carol, on call)
approves through the same path `runbook approve` takes; the offsets move; the fixed deploy v3
processes the orders again and catches up; the alert resolves; the postmortem draft is printed with
its path and the URL of its review page. Everything the demo created on Kafka is deleted at the
end; the draft stays for you to read and review.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from mq_runbooks.base.catalog import Catalog
from mq_runbooks.base.clusters import Clusters
from mq_runbooks.base.errors import RunbookError
from mq_runbooks.base.files import open_private_log
from mq_runbooks.base.settings import Settings

ORDERS = 300
PARTITIONS = 3
DEMO_TOKEN = "demo-alert-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Demo:
    def __init__(self, settings: Settings, clusters: Clusters, catalog: Catalog, say: Callable[[str], None]):
        self.settings, self.catalog, self.say, self.clusters = settings, catalog, say, clusters
        # log_level 3: librdkafka's errors only (no "%6|...|BGQUEUE|..." lines in the demo's output)
        self.kafka_config = {**clusters.kafka_cluster("primary").client_config(), "log_level": 3}
        suffix = uuid.uuid4().hex[:6]
        self.topic, self.group = f"demo-orders-{suffix}", f"demo-billing-{suffix}"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.serve: subprocess.Popen | None = None
        self.started = time.monotonic()

    def step(self, text: str) -> None:
        self.say(f"[{time.monotonic() - self.started:5.1f}s] {text}")

    # -- the incident ---------------------------------------------------------------------------

    def run(self) -> int:
        from mq_runbooks.integrations.kafka import KafkaClient

        try:
            with KafkaClient(self.kafka_config, name="primary") as kafka:
                kafka.create_topic(self.topic, PARTITIONS)
            self.step(f"topic {self.topic} ({PARTITIONS} partitions); producing {ORDERS} orders")
            producer = Producer(self.kafka_config)
            for number in range(ORDERS):
                producer.produce(self.topic, key=f"order-{number}", value=json.dumps({"order": number, "eur": 10 + number % 7}))
            producer.flush()
            billed = self.consume("billing v2 (the bad deploy)", bill=False)
            self.step(f"billing v2 committed {billed} orders and billed none of them: the deploy is rolled back")
            self.start_serve()
            starts_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
            run_id = self.fire_alert(starts_at)
            self.approve(run_id)
            view = self.wait_finished(run_id)
            if not view.succeeded:
                self.step(f"the run ended {view.state}: {view.message}")
                return 1
            billed = self.consume("billing v3 (the fix)", bill=True)
            self.step(f"billing v3 billed {billed} orders again; lag is back to "
                      f"{self.lag()} (from {ORDERS} replayed)")
            self.resolve_alert(starts_at)
            return self.show_postmortem(run_id)
        finally:
            self.cleanup()

    def consume(self, who: str, bill: bool, timeout_s: float = 90) -> int:
        """Consume the topic as the billing group up to its end and commit. Waits for what it needs,
        not for a fixed time: the group's assignment of every partition (a cold broker's first join
        takes seconds), then end-of-partition on each."""
        assigned: set[int] = set()
        consumer = Consumer({**self.kafka_config, "group.id": self.group, "auto.offset.reset": "earliest",
                             "enable.auto.commit": False, "enable.partition.eof": True,
                             "client.id": who.split(" (")[0].replace(" ", "-")})
        consumer.subscribe([self.topic], on_assign=lambda _, parts: assigned.update(p.partition for p in parts),
                           on_revoke=lambda _, parts: assigned.difference_update(p.partition for p in parts))
        seen, at_end, deadline = 0, set(), time.monotonic() + timeout_s
        try:
            while not (len(assigned) == PARTITIONS and at_end >= assigned):
                if time.monotonic() > deadline:
                    raise RunbookError(f"{who} did not reach the end of {self.topic} within {timeout_s:.0f}s "
                                       f"(assigned partitions: {sorted(assigned)}, at their end: {sorted(at_end)})")
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition())
                    continue
                at_end.discard(message.partition())
                seen += 1
            if seen:
                consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        self.step(f"{who} consumed {seen} order(s) and left the group")
        return seen

    def lag(self) -> int:
        from mq_runbooks.integrations.kafka import KafkaClient

        with KafkaClient(self.kafka_config) as kafka:
            return sum(item.lag or 0 for item in kafka.group_lag(self.group))

    # -- serve, alert, approval -------------------------------------------------------------------

    def start_serve(self) -> None:
        env = {**os.environ, "RUNBOOK_ALERT_TOKEN": DEMO_TOKEN, "RUNBOOK_DEPLOYMENT": "demo", "RUNBOOK_WORK_POOL": "demo",
               "RUNBOOK_PUBLIC_URL": self.url}
        logs = self.settings.snapshot_dir.parent / "run-logs"
        log = os.fdopen(open_private_log(logs / "demo-serve.log", truncate=True), "wb") \
            if logs.is_dir() else subprocess.DEVNULL
        self.serve = subprocess.Popen([str(Path(sys.executable).parent / "runbook"), "serve", "--port", str(self.port)],
                                      stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    self.step(f"runbook serve is up at {self.url}")
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
            if self.serve.poll() is not None:
                break
        raise RunbookError("runbook serve did not start for the demo (see run-logs/demo-serve.log)")

    def alert(self, status: str, starts_at: dt.datetime) -> dict:
        labels = {"alertname": "KafkaConsumerGroupStuck", "severity": "page", "cluster": "primary",
                  "consumergroup": self.group, "team": "billing"}
        ends = dt.datetime.now(dt.timezone.utc).isoformat() if status == "resolved" else "0001-01-01T00:00:00Z"
        payload = {
            "version": "4", "status": status, "receiver": "mq-runbooks", "groupKey": "demo", "truncatedAlerts": 0,
            "groupLabels": {"alertname": labels["alertname"]}, "commonLabels": labels,
            "commonAnnotations": {"summary": f"{self.group} billed nothing since the v2 deploy"},
            "externalURL": "http://alertmanager.demo:9093",
            "alerts": [{"status": status, "labels": labels,
                        "annotations": {"summary": f"{self.group} billed nothing since the v2 deploy"},
                        "startsAt": starts_at.isoformat(), "endsAt": ends, "generatorURL": "http://prometheus.demo/graph",
                        "fingerprint": f"demo{self.group[-6:]}"}],
        }
        answer = httpx.post(f"{self.url}/alerts/alertmanager", json=payload, timeout=30,
                            headers={"Authorization": f"Bearer {DEMO_TOKEN}"})
        answer.raise_for_status()
        return answer.json()

    def fire_alert(self, starts_at: dt.datetime) -> str:
        result = self.alert("firing", starts_at)
        if not result["started"]:
            raise RunbookError(f"the alert started no run: {result}")
        run_id = result["started"][0]["run_id"]
        self.step(f"Alertmanager -> POST /alerts/alertmanager: KafkaConsumerGroupStuck started kafka-replay run {run_id}")
        return run_id

    def approve(self, run_id: str) -> None:
        from mq_runbooks.app import runs
        from mq_runbooks.kit import journal

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            view = runs.read_run(run_id)
            plan = journal.last(view.entries, "plan")
            if view.state_type == "PAUSED" and journal.last(view.entries, "approval_requested") and plan:
                self.step(f"the plan waits at the gate: {plan.summary}")
                self.say(plan.data.get("markdown", ""))
                runs.answer_gate(self.settings, self.catalog, run_id, True, "carol",
                                 "v2 rolled back; replaying the last 15 minutes")
                self.step(f"carol (on call) approved: runbook approve {run_id} --as carol")
                return
            if view.finished:
                raise RunbookError(f"the run ended before its gate: {view.state} {view.message}")
            time.sleep(0.3)
        raise RunbookError("the run did not reach its gate within 60 s")

    def wait_finished(self, run_id: str):
        from mq_runbooks.app import runs

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            view = runs.read_run(run_id)
            if view.finished:
                for entry in view.entries:
                    if entry.kind in {"snapshot", "action", "verification", "outcome"}:
                        self.step(f"{entry.kind}: {entry.summary}")
                return view
            time.sleep(0.3)
        raise RunbookError("the run did not finish within 120 s")

    def resolve_alert(self, starts_at: dt.datetime) -> None:
        result = self.alert("resolved", starts_at)
        self.step(f"Alertmanager -> resolved: recorded in run {result['resolved'][0]['runs']}")

    def show_postmortem(self, run_id: str) -> int:
        from mq_runbooks.kit.postmortem.store import find_by_run

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            draft = find_by_run(self.settings.postmortem_dir, "kafka-replay", run_id)
            if draft is not None and "resolved" in draft.body:
                break
            time.sleep(0.5)
        if draft is None:
            self.step("no postmortem draft was written: see `runbook postmortems draft RUN`")
            return 1
        self.say("\n" + draft.body)
        self.step(f"postmortem draft: {draft.path}")
        page = f"{self.settings.public_url or 'http://HOST:PORT of runbook serve'}/postmortems/{draft.id}"
        self.step(f"review it: runbook postmortems review {draft.id} --as NAME, or {page} (while `runbook serve` runs)")
        return 0

    def cleanup(self) -> None:
        if self.serve is not None:
            self.serve.terminate()
            try:
                self.serve.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.serve.kill()
        admin = AdminClient(self.kafka_config)
        try:
            admin.delete_consumer_groups([self.group])[self.group].result(timeout=10)
        except Exception:  # noqa: BLE001  (a group that was never created)
            pass
        try:
            admin.delete_topics([self.topic])[self.topic].result(timeout=10)
        except Exception:  # noqa: BLE001
            pass
        mirrored = self.delete_mirrored_copy()
        self.step(f"cleaned up: topic {self.topic}{mirrored} and group {self.group} deleted, runbook serve stopped")

    def delete_mirrored_copy(self) -> str:
        """MirrorMaker 2 copies the demo's topic to the standby as `primary.<topic>`: delete it too."""
        if "standby" not in self.clusters.kafka:
            return ""
        copy = f"primary.{self.topic}"
        admin = AdminClient({**self.clusters.kafka_cluster("standby").client_config(), "log_level": 3})
        deadline = time.monotonic() + 10  # MM2 may create the copy a few seconds after the topic
        while time.monotonic() < deadline:
            topics = admin.list_topics(timeout=5).topics
            if copy in topics:
                try:
                    admin.delete_topics([copy])[copy].result(timeout=10)
                    return f" (and its standby copy {copy})"
                except Exception:  # noqa: BLE001
                    return ""
            time.sleep(1)
        return ""
