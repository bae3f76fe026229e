"""The plan contract's intent and drift (kit/plans.py): plain Python, no broker."""
from __future__ import annotations

from dataclasses import dataclass

from mq_runbooks.kit.plans import PlanTable, compare


@dataclass(frozen=True)
class Offsets(PlanTable):
    table: tuple[tuple, ...]
    COLUMNS = ("topic", "partition", "target", "log end")
    KEY_COLUMNS = ("topic", "partition")
    INTENT_COLUMNS = ("target",)

    def columns(self):
        return self.COLUMNS

    def rows(self):
        return list(self.table)

    def summary(self):
        return f"{len(self.table)} partition(s)"


@dataclass(frozen=True)
class Untyped(PlanTable):
    table: tuple[tuple, ...]

    def columns(self):
        return ("queue", "depth")

    def rows(self):
        return list(self.table)

    def summary(self):
        return "queues"


def test_the_digest_binds_keys_and_intent_not_observations():
    approved = Offsets((("orders", 0, 5, 90), ("orders", 1, 7, 80)))
    drifted = Offsets((("orders", 0, 5, 95), ("orders", 1, 7, 99)))
    retargeted = Offsets((("orders", 0, 6, 90), ("orders", 1, 7, 80)))
    assert drifted.digest() == approved.digest()
    assert retargeted.digest() != approved.digest()


def test_compare_tells_changed_intent_from_drift_row_by_row():
    approved = Offsets((("orders", 0, 5, 90), ("orders", 1, 7, 80)))
    replan = Offsets((("orders", 0, 6, 95), ("orders", 2, 1, 10)))
    changes = compare(approved.columns(), [list(r) for r in approved.rows()], replan)
    assert changes.intent_changed
    assert changes.intent_lines() == ["orders:2: new row", "orders:1: no longer in the plan", "orders:0 target 5 -> 6"]
    assert changes.drift_lines() == ["orders:0 log end 90 -> 95"]
    assert changes.markdown().startswith("**Changed since the approved plan** (old -> new):\n\n- orders:2: new row")


def test_only_drift_is_no_change_of_intent():
    approved = Offsets((("orders", 0, 5, 90),))
    changes = compare(list(approved.columns()), [["orders", 0, 5, 90]], Offsets((("orders", 0, 5, 120),)))
    assert not changes.intent_changed and changes.drift_lines() == ["orders:0 log end 90 -> 120"]


def test_a_plan_that_names_no_intent_binds_every_column():
    plan = Untyped((("orders", 3),))
    assert Untyped((("orders", 4),)).digest() != plan.digest()
    changes = compare(plan.columns(), [["orders", 3]], Untyped((("orders", 4),)))
    assert changes.intent_lines() == ["orders:4: new row", "orders:3: no longer in the plan"]
