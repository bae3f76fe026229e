"""The kit: what every runbook runs through (driver, journal, gate, lock, notifier, postmortem drafting)."""
