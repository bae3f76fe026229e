"""What `runbook status --json` and GET /api/v1/runs/{run} give for a big run (app/run_documents.py):
pure tests over a RunView built in memory, no server."""
from __future__ import annotations

import datetime as dt
import json

from mq_runbooks.app.run_documents import SHOWN, run_document
from mq_runbooks.app.runs import RunView
from mq_runbooks.kit.journal import Entry

T0 = dt.datetime(2026, 12, 7, 21, 12, tzinfo=dt.timezone.utc)
COLUMNS = ["consumer", "entry id", "idle ms", "deliveries", "action"]


def big_run(entries: int) -> RunView:
    rows = [["billing-dead", f"1796677452537-{i}", 22245, 1, "claim to billing-healthy"] for i in range(entries)]
    csv = "\n".join([",".join(COLUMNS)] + [",".join(map(str, row)) for row in rows])
    journal = [
        Entry(T0, "plan", f"{entries} stuck entries", {"columns": COLUMNS, "rows": rows, "csv": csv, "digest": "d1"}),
        Entry(T0 + dt.timedelta(seconds=9), "note", "the approved plan still holds",
              {"drift": [{"id": row[1], "idle_ms": [22245, 31000]} for row in rows]}),
        Entry(T0 + dt.timedelta(seconds=20), "outcome", "drained", {"outcome": "succeeded", "claimed": entries}),
    ]
    return RunView(id="f893de59-bd57-48cb-ae4e-2e3caa12f2f0", name="redis-streams-drain-stuck primary/s/billing",
                   runbook="redis-streams-drain-stuck", state="Completed", state_type="COMPLETED", message="drained",
                   started=T0.isoformat(), entries=journal)


def test_a_big_runs_document_stays_under_a_megabyte_and_says_what_it_cut():
    document = run_document(big_run(100_000), now=T0)
    assert len(json.dumps(document)) < 1_000_000
    plan, note, outcome = document["journal"]
    assert plan["cut"] is True and plan["data"]["rows_total"] == 100_000 and len(plan["data"]["rows"]) == SHOWN
    assert plan["data"]["rows"][0] == {"consumer": "billing-dead", "entry id": "1796677452537-0", "idle ms": 22245,
                                       "deliveries": 1, "action": "claim to billing-healthy"}
    assert plan["data"]["csv_total"] == 100_001
    assert plan["data"]["csv"].endswith(f"... and {100_001 - SHOWN:,} more line(s)")
    assert note["cut"] is True and note["data"]["drift_total"] == 100_000
    assert "cut" not in outcome and outcome["data"] == {"outcome": "succeeded", "claimed": 100_000}
    assert document["outcome"]["claimed"] == 100_000, "the outcome's numbers are never cut"


def test_the_whole_document_keeps_every_row_and_a_small_run_is_never_cut():
    whole = run_document(big_run(1_000), now=T0, whole=True)
    assert len(whole["journal"][0]["data"]["rows"]) == 1_000 and "cut" not in whole["journal"][0]
    small = run_document(big_run(SHOWN - 1), now=T0)  # its csv: a header and SHOWN - 1 rows
    assert all("cut" not in entry for entry in small["journal"])
    assert len(small["journal"][0]["data"]["rows"]) == SHOWN - 1
