"""The runbook catalog shipped with mq-runbooks: one YAML file per runbook (package data; no code)."""
