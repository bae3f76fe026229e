"""The app: CLI, the HTTP app of `runbook serve`, the runner wiring, the demo. Sits on top of everything."""
