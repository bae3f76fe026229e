"""The machinery that ties the catalog, the flows and the integrations together:
settings, clusters.yaml, the runbook catalog, the CLI and (later) the HTTP app."""
