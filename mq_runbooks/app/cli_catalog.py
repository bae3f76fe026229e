"""CLI commands over the catalog and the configuration: list, show, doctor. None of them imports
Prefect (`show` imports the runbook's parameter model, which lives in its flow module)."""
from __future__ import annotations

import datetime as dt
import json
import re
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

import annotated_types
import click
from rich.markup import escape

from mq_runbooks.app.cli_base import EXIT_FAILED, Context, cli, markup, pass_context

if TYPE_CHECKING:
    from mq_runbooks.base.catalog import Runbook, Trigger

_TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_ALERT_FIELD = re.compile(r"^(labels|annotations)(?:\.(\w+)|\[['\"](.+)['\"]\])$")
_WORDS = {str: "text", int: "whole number", float: "number", bool: "true or false", Path: "path",
          dt.datetime: "date and time (ISO 8601)", dt.date: "date (YYYY-MM-DD)",
          dt.timedelta: "duration (ISO 8601, e.g. PT15M)"}


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_context
def list_runbooks(context: Context, as_json: bool) -> None:
    """List the runbooks of the catalog (a broken runbook file is listed as BROKEN; `doctor` says why)."""
    report = context.catalog_report(resolve=False)
    runbooks = list(report.catalog)
    if as_json:
        click.echo(json.dumps([
            {"id": r.id, "title": r.title, "risk": r.risk, "triggers": len(r.triggers)} for r in runbooks
        ] + [{"id": Path(path).stem, "path": path, "broken": reason} for path, reason in report.broken.items()],
            indent=2))
    else:
        rows = [[r.id, r.title, r.risk, ", ".join(_alert_names(r)) or "CLI / Slack only"] for r in runbooks]
        rows += [[Path(path).stem, markup(f"[red]BROKEN[/red]: {escape(path)}"), "", ""] for path in report.broken]
        context.rows(("id", "title", "risk", "started by"), rows, no_wrap=("id",),
                     title=f"{len(runbooks)} runbook(s) in {report.catalog.directory}")
    for reason in report.broken.values():
        click.echo(f"broken runbook file: {reason}", err=True)


def _alert_names(runbook: Runbook) -> list[str]:
    return sorted({str(m) for t in runbook.triggers for m in t.matchers if m.name == "alertname"})


@cli.command("show")
@click.argument("runbook_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@pass_context
def show(context: Context, runbook_id: str, as_json: bool) -> None:
    """Show a runbook as its file says: what it does, its parameters, who approves, which alerts start it."""
    runbook = context.runbook_without_flow(runbook_id)
    fields = runbook.parameters_model.model_fields
    if as_json:
        document = runbook.model_dump(mode="json")
        document["approval"]["timeout_text"] = runbook.approval.timeout_text
        document["triggers"] = [
            {"matchers": [str(m) for m in t.matchers], "params": t.params} for t in runbook.triggers
        ]
        document["parameter_schema"] = runbook.parameters_model.model_json_schema()
        click.echo(json.dumps(document, indent=2))
        return
    out = context.out
    out.print(f"[bold]{runbook.id}[/bold]: {escape(runbook.title)}  (risk: {runbook.risk})")
    out.print(runbook.description.strip(), markup=False)
    rows = []
    for name, info in fields.items():
        default = "required" if info.is_required() else _default_text(info.get_default(call_default_factory=True))
        rows.append((name, type_words(info.annotation, info.metadata), default, info.description or ""))
    out.print("\nparameters (-p key=value):", markup=False)
    if context.piped or out.width < 100:
        for name, kind, default, meaning in rows:
            out.print(f"  {name}: {kind}; {default}", markup=False)
            if meaning:
                out.print(f"      {meaning}", markup=False)
    else:
        context.rows(("parameter", "type", "default", "meaning"), rows, no_wrap=("parameter",))
    policy = runbook.approval
    out.print(
        f"\napproval: {policy.required} of {', '.join(policy.approvers)}; "
        f"self-approval {'allowed' if policy.self_approval else 'not allowed'}; "
        f"times out after {policy.timeout_text}", markup=False,
    )
    out.print(f"lock: one run at a time per {readable_template(runbook.lock)}", markup=False)
    if not runbook.triggers:
        out.print("started by: a person (CLI or Slack); no alert starts it", markup=False)
    for trigger in runbook.triggers:
        out.print(trigger_text(trigger), markup=False)


def type_words(annotation: Any, metadata: list[Any] = ()) -> str:
    """A parameter's type as people say it: 'one of refuse, by_timestamp', 'list of text',
    'whole number >= 0', 'text, not empty'."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        present = [arg for arg in args if arg is not type(None)]
        if len(present) == 1:
            return type_words(present[0], metadata)
        return " or ".join(type_words(arg) for arg in present)
    if origin is Literal:
        return "one of " + ", ".join(str(arg) for arg in args)
    is_list = origin in (list, tuple, set, frozenset)
    if is_list:
        words = "list of " + (type_words(args[0]) if args else "values")
    else:
        words = _WORDS.get(annotation, getattr(annotation, "__name__", str(annotation)))
    constraints = _constraints(metadata, is_list)
    if annotation in (int, float):  # whole number >= 0
        return " ".join([words, *constraints])
    return ", ".join([words, *constraints])


def _constraints(metadata: list[Any], is_list: bool = False) -> list[str]:
    words = []
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            words.append(f">= {item.ge:g}")
        elif isinstance(item, annotated_types.Gt):
            words.append(f"> {item.gt:g}")
        elif isinstance(item, annotated_types.Le):
            words.append(f"<= {item.le:g}")
        elif isinstance(item, annotated_types.Lt):
            words.append(f"< {item.lt:g}")
        elif isinstance(item, annotated_types.MinLen):
            words.append(f"at least {item.min_length}" if is_list else "not empty" if item.min_length == 1
                         else f"at least {item.min_length} characters")
        elif isinstance(item, annotated_types.MaxLen):
            words.append(f"at most {item.max_length}" + ("" if is_list else " characters"))
        elif getattr(item, "pattern", None):
            words.append(f"matching {item.pattern}")
    if len(words) == 2 and words[0].startswith(">") and words[1].startswith("<"):
        return [f"{words[0]} and {words[1]}"]
    return words


def _default_text(value: Any) -> str:
    if value is None or value == []:
        return "default: none"
    if isinstance(value, bool):
        return f"default: {str(value).lower()}"
    if isinstance(value, float):
        return f"default: {value:g}"
    return f"default: {value}"


def readable_template(template: str) -> str:
    """'kafka:{{ cluster }}:group:{{ group }}' -> 'kafka:<cluster>:group:<group>';
    '{{ labels.cluster }}' -> "the alert's label cluster"."""
    whole = _TEMPLATE.fullmatch(template.strip())
    if whole and _ALERT_FIELD.match(whole.group(1)):
        kind, name, quoted = _ALERT_FIELD.match(whole.group(1)).groups()
        return f"the alert's {kind[:-1]} {name or quoted}"
    return _TEMPLATE.sub(lambda m: f"<{m.group(1)}>", template)


def trigger_text(trigger: Trigger) -> str:
    when = ", ".join(str(m) for m in trigger.matchers)
    params = "; ".join(f"{key} = {readable_template(value)}" for key, value in trigger.params.items())
    return f"started by alerts matching {when}" + (f"\n    with {params}" if params else "")


@cli.command("doctor")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds each check may take.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_context
def doctor(context: Context, timeout: float, as_json: bool) -> None:
    """Check the catalog, every configured cluster, the endpoint switches, MirrorMaker 2, the Prefect
    API, the work pool's workers and Slack.

    Exits 1 naming each problem (no worker online and Slack not configured are reported, not problems).
    """
    from mq_runbooks.app.doctor import run_checks

    checks = run_checks(context.settings, context.clusters, context.catalog_report(), timeout_s=timeout)
    if as_json:
        click.echo(json.dumps([check.__dict__ for check in checks], indent=2))
    else:
        context.rows(("component", "address", "status", "detail"), [
            (check.component, check.address, markup(check.status_markup), check.detail) for check in checks
        ], no_wrap=("component",))
    problems = [check for check in checks if check.required and not check.ok]
    if problems:
        for check in problems:
            click.echo(f"problem: {check.component}: {check.detail}", err=True)
        sys.exit(EXIT_FAILED)
