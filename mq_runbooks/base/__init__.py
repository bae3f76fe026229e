"""The base layer: errors, settings, clusters.yaml and the runbook catalog. Imports nothing of ours above it."""
