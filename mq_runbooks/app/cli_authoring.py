"""CLI commands for people who write runbooks: `runbook new` scaffolds one, `runbook validate` checks
a directory of them (the catalog loader's checks and the driver's rules, mq_runbooks/kit/conformance.py)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from mq_runbooks.app.cli_base import EXIT_FAILED, Context, cli, pass_context
from mq_runbooks.base.errors import UsageError

SCAFFOLDS = Path(__file__).resolve().parent / "scaffold"
# The kinds of target each broker's scaffold can act on (the first is the default), with the lock each
# takes and the parameters `runbook plan` needs for it; the module is scaffold/BROKER-TARGET.py.tmpl.
TARGETS: dict[str, dict[str, tuple[str, str]]] = {
    "kafka": {"group": ("kafka:{{ cluster }}:group:{{ group }}", "-p group=GROUP"),
              "topic": ("kafka:{{ cluster }}:topic:{{ topic }}", "-p topic=TOPIC")},
    "rabbitmq": {"queue": ("rabbitmq:{{ cluster }}:{{ vhost }}:{{ queue }}", "-p queue=QUEUE"),
                 "vhost": ("rabbitmq:{{ cluster }}:{{ vhost }}", "-p vhost=VHOST")},
    "redis": {"stream": ("redis:{{ cluster }}:{{ stream }}", "-p stream=STREAM")},
    "artemis": {"queue": ("artemis:{{ cluster }}:queue:{{ queue }}", "-p queue=QUEUE")},
    "rocketmq": {"group": ("rocketmq:{{ cluster }}:group:{{ group }}", "-p group=GROUP")},
}
TEAMS = {"kafka": "@kafka-oncall", "rabbitmq": "@rabbitmq-oncall", "redis": "@redis-oncall",
         "artemis": "@artemis-oncall", "rocketmq": "@rocketmq-oncall"}


@cli.command("new")
@click.argument("runbook_id", metavar="ID")
@click.option("--broker", type=click.Choice(list(TARGETS)), required=True,
              help="Which broker the runbook acts on (decides the scaffold's parameters and plan).")
@click.option("--target", "target_kind", type=click.Choice(sorted({t for kinds in TARGETS.values() for t in kinds})),
              default=None, help="What it acts on: kafka group (default) or topic; rabbitmq queue (default) or "
                                 "vhost; redis stream; artemis queue.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write it (default: RUNBOOK_TEAM_CATALOG, else ./team-runbooks).")
@pass_context
def new(context: Context, runbook_id: str, broker: str, target_kind: str | None, directory: Path | None) -> None:
    """Scaffold a runbook: ID.yaml and its Python module, which validate and plan as they are."""
    kinds = TARGETS[broker]
    target_kind = target_kind or next(iter(kinds))
    if target_kind not in kinds:
        raise UsageError(f"--target {target_kind} is not a target of {broker} (allowed: {', '.join(kinds)})")
    lock, plan_args = kinds[target_kind]
    if not re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]", runbook_id):
        raise UsageError(f"{runbook_id!r} is not a runbook id: lower-case letters, digits and dashes, starting "
                         f"with a letter (e.g. rabbitmq-purge-queue)")
    directory = directory or context.settings.team_catalog or Path("team-runbooks")
    module = runbook_id.replace("-", "_")
    yaml_path, py_path = directory / f"{runbook_id}.yaml", directory / f"{module}.py"
    existing = [str(p) for p in (yaml_path, py_path) if p.exists()]
    if existing:
        raise UsageError(f"{', '.join(existing)} already exist(s): pick another id or directory")
    names = {"id": runbook_id, "module": module, "func": module,
             "cls": "".join(part.capitalize() for part in runbook_id.split("-")),
             "lock": lock, "approvers": TEAMS[broker]}
    directory.mkdir(parents=True, exist_ok=True)
    py_path.write_text((SCAFFOLDS / f"{broker}-{target_kind}.py.tmpl").read_text().format(**names))
    yaml_path.write_text((SCAFFOLDS / "runbook.yaml.tmpl").read_text().format(**names))
    from mq_runbooks.kit.conformance import validate_directory

    problems = validate_directory(directory).get(str(yaml_path), ["not found after writing it"])
    if problems:  # a scaffold that does not validate is our bug: say so rather than leave it half-made
        raise UsageError(f"the scaffold of {runbook_id} does not validate: {'; '.join(problems)}")
    context.out.print(f"wrote {yaml_path} and {py_path}\nnext:\n"
                      f"  export RUNBOOK_TEAM_CATALOG={directory.resolve()}\n"
                      f"  runbook validate {directory}\n"
                      f"  runbook plan {runbook_id} -p cluster=primary {plan_args}\n"
                      "then write act and verify: docs/writing-runbooks.md")


@cli.command("validate")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@pass_context
def validate(context: Context, directory: Path | None) -> None:
    """Check every runbook file of DIR (default: the configured catalogs) without touching a broker,
    and that every @team its policy names is in teams.yaml (RUNBOOK_TEAMS).

    Exit code: 0 all valid, 1 some runbook is invalid (each is named with what to fix).
    """
    from mq_runbooks.kit.conformance import validate_directory

    if directory is not None and not directory.is_dir():
        raise UsageError(f"{directory} is not a directory of runbook files")
    folders = [directory] if directory else [p for p in (context.settings.catalog, context.settings.team_catalog) if p]
    report: dict[str, list[str]] = {}
    warnings: dict[str, list[str]] = {}
    for folder in folders:
        report.update(validate_directory(folder, context.settings.teams, warnings))
    if not report:
        raise UsageError(f"no runbook files (*.yaml) in {', '.join(map(str, folders))}")
    for path, problems in report.items():
        if problems:
            context.out.print(f"[red]INVALID[/red] {path}")
            for problem in problems:
                context.out.print(f"  {problem}")
        else:
            context.out.print(f"[green]ok[/green]      {path}")
        for warning in warnings.get(path, []):
            context.out.print(f"  [yellow]warning[/yellow]: {warning}")
    bad = sum(1 for problems in report.values() if problems)
    context.out.print(f"{len(report) - bad} valid, {bad} invalid")
    if bad:
        sys.exit(EXIT_FAILED)
