"""Prefect flows: one module per runbook family, plus the steps every runbook shares."""
