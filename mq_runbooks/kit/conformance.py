"""The rules a runbook must keep to run through the driver, checked without a broker: what
`runbook validate` reports and what the catalog's conformance test holds every shipped runbook to.

    problems = check_runbook(runbook)      # [] when it keeps every rule
    problems += check_policy(runbook, load_teams_or_none(teams_path), teams_path)

The catalog loader already checked the YAML (fields, imports, lock and trigger templates); these are
the rules between the YAML and the Python that the loader cannot see.
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path
from collections.abc import Mapping

from mq_runbooks.base.catalog import CatalogError, Runbook, load_runbook, make_importable
from mq_runbooks.base.errors import ConfigError
from mq_runbooks.kit.driver import RunbookSteps
from mq_runbooks.kit.teams import load_teams

FLOW_PARAMETERS = ("params", "requested_by", "trigger")


def check_runbook(runbook: Runbook) -> list[str]:
    """Every rule the runbook breaks, each naming the rule and how to keep it."""
    problems: list[str] = []
    flow = runbook.flow_function
    if getattr(flow, "name", None) != runbook.id:
        problems.append(f"flow: the Prefect flow's name is {getattr(flow, 'name', None)!r}; it must be the id "
                        f"{runbook.id!r} (the file name): runbook_flow(STEPS, ...) names it after its steps' id")
    signature = list(inspect.signature(flow.fn).parameters) if hasattr(flow, "fn") else []
    if tuple(signature) != FLOW_PARAMETERS:
        problems.append(f"flow: its parameters are ({', '.join(signature)}); they must be "
                        f"(params, requested_by, trigger), as the CLI, alerts and Slack start runs with them")
    else:
        annotation = inspect.signature(flow.fn).parameters["params"].annotation
        if annotation is not runbook.parameters_model and getattr(annotation, "__name__", annotation) != \
                runbook.parameters_model.__name__:
            problems.append(f"flow: `params` is annotated {annotation!r}; it must be the runbook's parameters "
                            f"model {runbook.parameters}")
    steps = steps_of(runbook)
    if runbook.planner is None:
        problems.append("plan: missing; point it at the module's `dry_run = STEPS.dry_run` (runbook plan and the "
                        "CLI's preflight use it to refuse bad input before a run exists)")
    elif getattr(runbook.planner, "__func__", None) is not RunbookSteps.dry_run or \
            (steps is not None and runbook.planner.__self__ is not steps):
        problems.append(f"plan: {runbook.plan} is not STEPS.dry_run (the driver's dry run refuses missing targets)")
    if steps is None:
        problems.append(f"flow: its module has no RunbookSteps instance with id {runbook.id!r} (e.g. STEPS = "
                        f"MyRunbook(), whose flow is runbook_flow(STEPS, ...)); see docs/writing-runbooks.md")
        return problems
    for name in ("target", "observe", "act", "verify"):
        if getattr(type(steps), name) is getattr(RunbookSteps, name):
            problems.append(f"STEPS: {type(steps).__name__}.{name} is not written (every runbook needs target, "
                            f"observe, act and verify)")
    if _overrides(steps, "restore") and not _overrides(steps, "snapshot"):
        problems.append("STEPS: restore without snapshot: the driver restores only what a snapshot saved")
    return problems


def steps_of(runbook: Runbook) -> RunbookSteps | None:
    """The RunbookSteps instance of the runbook's flow module with the runbook's id (a module may hold
    two runbooks, e.g. a failover and its failback)."""
    module = sys.modules.get(getattr(getattr(runbook.flow_function, "fn", None), "__module__", ""), None)
    found = [value for value in vars(module).values() if isinstance(value, RunbookSteps)] if module else []
    return next((steps for steps in found if steps.id == runbook.id), None)


def _overrides(steps: RunbookSteps, name: str) -> bool:
    return getattr(type(steps), name) is not getattr(RunbookSteps, name)


def validate_directory(directory: Path, teams_path: Path | None = None,
                       warnings: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Each runbook file of a directory -> its problems ([] when valid); one broken file never hides
    the others (the loader's error is that file's problem). With `teams_path` (teams.yaml) the
    policy's @teams are checked against it; `warnings`, when given, gets what is allowed but
    probably not meant (an untouched scaffold)."""
    make_importable(directory)
    teams = load_teams_or_none(teams_path) if teams_path is not None else None
    report: dict[str, list[str]] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            runbook = load_runbook(path)
        except CatalogError as exc:
            report[str(path)] = [str(exc)]
            continue
        report[str(path)] = check_runbook(runbook)
        if teams_path is not None:
            report[str(path)] += check_policy(runbook, teams, teams_path)
        if warnings is not None and runbook.title.startswith("TODO"):
            warnings.setdefault(str(path), []).append(
                f"title: {runbook.title!r} is the scaffold's; say what the runbook does in the operator's words")
    return report


def load_teams_or_none(path: Path) -> dict[str, list[str]] | None:
    """teams.yaml's teams, or None when there is no such file (ConfigError when it is broken)."""
    return load_teams(path) if path.exists() else None


def check_policy(runbook: Runbook, teams: Mapping[str, list[str]] | None, teams_path: Path) -> list[str]:
    """Every @team the approval policy or the starters name must be a team of teams.yaml: an unknown
    one would only show at the gate, as "X is not an approver"."""
    named = [("approval.approvers", name) for name in runbook.approval.approvers]
    named += [("starters.plan", name) for name in runbook.starters.plan]
    named += [("starters.run", name) for name in runbook.starters.run or []]
    problems = []
    for where, name in named:
        if not name.startswith("@"):
            continue
        if teams is None:
            problems.append(f"{where}: {name} is a team, but there is no {teams_path} (RUNBOOK_TEAMS) to say who is in it")
        elif name[1:] not in teams:
            problems.append(f"{where}: {name} is not a team of {teams_path} (teams: "
                            f"{', '.join('@' + team for team in sorted(teams)) or 'none'})")
    return problems
