"""The runbook catalog: one YAML file per runbook in runbooks/, validated before anything runs.

A runbook file says what the runbook does, which alerts start it, which typed parameters it takes
(a pydantic model in its flow module), who may approve it, and the key of the lock that keeps two
runs off one target. The loader refuses a bad file with its path, the field and what is allowed:
unknown keys, a flow or parameter model that cannot be imported, a lock or trigger that names a
parameter the model does not have, duplicate ids.
"""
from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args, get_origin

import jinja2
import yaml
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from mq_runbooks.base.durations import parse_short_duration
from mq_runbooks.base.errors import CatalogError, NotFoundError, ParameterError
from mq_runbooks.base.matchers import Matcher, parse_matcher
from mq_runbooks.base.suggest import did_you_mean
from mq_runbooks.base.validation import describe_error, field_path, validation_problems

TEMPLATES = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


@functools.lru_cache(maxsize=1024)
def compiled(template: str) -> jinja2.Template:
    """A catalog template, compiled once (compiling costs far more than rendering; alerts render
    the same few templates again and again)."""
    return TEMPLATES.from_string(template)

_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApprovalPolicy(_Strict):
    approvers: list[str] = Field(min_length=1, description="people or groups (@name) who may approve")
    required: int = Field(1, ge=1, le=10, description="approvals needed before the runbook acts")
    self_approval: bool = Field(False, description="whether the person who started a run may approve it")
    timeout: float = Field(1800.0, description="how long the gate waits, e.g. 30m; then the run is rejected")

    _timeout_text: str = PrivateAttr("")

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_short_duration(value)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_text(cls, data: Any, handler: Any) -> "ApprovalPolicy":
        policy = handler(data)
        if isinstance(data, Mapping) and data.get("timeout") is not None:
            policy._timeout_text = str(data["timeout"]).strip()
        return policy

    @property
    def timeout_text(self) -> str:
        """The timeout as the runbook file writes it (e.g. 30m), else in the largest whole unit."""
        if self._timeout_text:
            return self._timeout_text
        seconds = int(self.timeout)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds % size == 0:
                return f"{seconds // size}{unit}"
        return f"{self.timeout:g}s"


class Starters(_Strict):
    """Who may start a runbook from Slack ("*" = anyone in the channel; names, Slack ids or @teams)."""

    plan: list[str] = Field(default_factory=lambda: ["*"], description="who may ask for a plan")
    run: list[str] | None = Field(None, description="who may start a run (default: the approvers)")


class Trigger(_Strict):
    matchers: list[Matcher] = Field(min_length=1, description="Alertmanager label matchers, all must match")
    params: dict[str, str] = Field(default_factory=dict, description="parameter -> Jinja2 template over the alert")

    @field_validator("matchers", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [parse_matcher(item) if isinstance(item, str) else item for item in value]
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: item if isinstance(item, str) else str(item) for key, item in value.items()}
        return value

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(matcher.matches(labels) for matcher in self.matchers)


class Runbook(_Strict):
    """One runbook file, validated; `flow` and `parameters_model` are the imported objects."""

    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    flow: str = Field(description="module:function of the Prefect flow")
    parameters: str = Field(description="module:class of the pydantic model of its parameters")
    plan: str | None = Field(None, description="module:function computing the plan alone (runbook plan)")
    risk: Literal["low", "medium", "high"]
    lock: str = Field(min_length=1, description="Jinja2 template of the lock key over the parameters")
    approval: ApprovalPolicy
    triggers: list[Trigger] = Field(default_factory=list)
    starters: Starters = Field(default_factory=Starters)
    source: str = Field("", exclude=True)

    _flow: Any = PrivateAttr(None)
    _model: type[BaseModel] | None = PrivateAttr(None)
    _planner: Any = PrivateAttr(None)

    @field_validator("flow", "parameters", "plan")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        if value is not None and not _REF.match(value):
            raise ValueError(f"{value!r} is not module:name (e.g. mq_runbooks.flows.kafka_replay:kafka_replay)")
        return value

    @property
    def flow_function(self) -> Any:
        return self._flow

    @property
    def planner(self) -> Any:
        """The function `runbook plan` calls: (params, clusters) -> plan; None if it has none."""
        return self._planner

    @property
    def parameters_model(self) -> type[BaseModel]:
        assert self._model is not None, "a Runbook is resolved by the loader"
        return self._model

    def parameter_names(self) -> list[str]:
        return list(self.parameters_model.model_fields)

    def validate_parameters(self, raw: Mapping[str, Any]) -> BaseModel:
        """Turn key=value input (strings, or lists for repeatable keys) into the typed model.

        Raises ParameterError naming every invalid parameter and what is allowed.
        """
        model = self.parameters_model
        fields = model.model_fields
        unknown = [key for key in raw if key not in fields]
        problems = [(key, f"unknown parameter; {self.id} takes: {', '.join(fields)}{did_you_mean(key, fields)}")
                    for key in unknown]
        values = {}
        for key, value in raw.items():
            if key in fields:
                values[key] = _shape(value, fields[key].annotation)
        try:
            params = model.model_validate(values)
        except ValidationError as exc:
            found = _parameter_problems(exc, fields)
            if unknown:
                # One error per mistake: what the model says about the parameters as a whole (e.g.
                # "give exactly one reset spec") follows from the misspelt name; its own errors stay.
                found = [(path, reason) for path, reason in found if path in fields]
            raise ParameterError(self.id, problems + found) from None
        if problems:
            raise ParameterError(self.id, problems)
        return params

    def lock_key(self, params: BaseModel) -> str:
        return compiled(self.lock).render(**params.model_dump()).strip()


def _shape(value: Any, annotation: Any) -> Any:
    """A single value for a list field becomes a one-item list; a repeated one for a scalar stays a list
    (and the model names it as an error)."""
    sequences = (list, tuple, set, frozenset)  # each one a "list of ..." to the person typing -p
    is_list = get_origin(annotation) in sequences or any(get_origin(arg) in sequences for arg in get_args(annotation))
    if is_list and not isinstance(value, list):
        return [value]
    return value


def _parameter_problems(exc: ValidationError, fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors():
        location = tuple(error.get("loc", ()))
        path = field_path(location[:1]) if location else "(parameters)"
        reason = describe_error(error)
        if location and location[0] in fields and fields[location[0]].description:
            reason += f" (expected: {fields[location[0]].description})"
        problems.append((path, reason))
    return problems


def file_parameters(runbook: Runbook) -> list[str]:
    """The parameters of `runbook` that name a file on the host (marked on their pydantic Field with
    `json_schema_extra={"file": True}`, like kafka-replay's `from_file`)."""
    return [name for name, info in runbook.parameters_model.model_fields.items()
            if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("file") is True]


def refuse_file_parameters(runbook: Runbook, raw: Mapping[str, Any], where: str) -> None:
    """Raise ParameterError when input from `where` (Slack, an alert) names a file parameter: files on
    the host running serve are an input of the CLI only."""
    named = [name for name in file_parameters(runbook) if name in raw]
    if named:
        raise ParameterError(runbook.id, [
            (name, f"names a file on the server, which is never taken from {where}; "
                   f"run it from the CLI (runbook plan|run {runbook.id} -p {name}=PATH)")
            for name in named
        ])


def _import(reference: str) -> Any:
    module_name, _, attribute = reference.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute)


def _template_variables(template: str) -> set[str]:
    return meta.find_undeclared_variables(TEMPLATES.parse(template))


def load_runbook(path: Path, resolve: bool = True, flows: bool = True) -> Runbook:
    """Parse, validate and resolve one runbook file; CatalogError names the file, field and reason.

    With resolve=False the flow and parameter modules are not imported (nor checked): enough for
    listing the catalog without importing Prefect. With flows=False the parameter model is (and
    checked against the triggers and lock), the flow and plan modules not (see resolve_parameters)."""
    source = str(path)
    try:
        with path.open(encoding="utf-8") as stream:  # a stream with a name: YAML's errors name the file
            document = yaml.safe_load(stream)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source} is not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{source} cannot be read as UTF-8 text: {exc}") from None
    if not isinstance(document, dict):
        raise CatalogError(f"{source}: a runbook file is a mapping (title, description, flow, ...)")
    try:  # the file name is the id (an `id:` key, where a file still has one, must repeat it)
        runbook = Runbook(source=source, **{"id": path.stem, **document})
    except ValidationError as exc:
        lines = []
        for error, (path_, reason) in zip(exc.errors(), validation_problems(exc)):
            if reason == "unknown key":
                reason += f" (allowed: {', '.join(_keys_at(Runbook, tuple(error.get('loc', ()))[:-1]))})"
            lines.append(f"  {path_}: {reason}")
        raise CatalogError(f"{source} is invalid:\n" + "\n".join(lines)) from None
    if runbook.id != path.stem:
        raise CatalogError(f"{source}: id {runbook.id!r} must match the file name ({path.stem!r})")
    if resolve:
        _resolve(runbook, flows)
    return runbook


def _keys_at(model: type[BaseModel], location: tuple[Any, ...]) -> list[str]:
    """The keys the runbook file allows at `location` (e.g. ('approval',) -> approvers, required, ...)."""
    for part in location:
        if isinstance(part, int):
            continue  # an item of a list: the same model
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        nested = next((arg for arg in (annotation, *get_args(annotation))
                       if isinstance(arg, type) and issubclass(arg, BaseModel)), None)
        if nested is None:
            return []
        model = nested
    return [name for name in model.model_fields if name != "source"]


def resolve_parameters(runbook: Runbook) -> Runbook:
    """Import a runbook loaded with resolve=False's parameter model, not its flow or plan, and check
    its lock and triggers against it (CatalogError): what `show` needs, without importing Prefect."""
    _resolve(runbook, flows=False)
    return runbook


def _resolve(runbook: Runbook, flows: bool = True) -> None:
    source = runbook.source
    problems: list[str] = []
    if flows:
        try:
            flow = _import(runbook.flow)
            if not hasattr(flow, "fn") or not callable(flow):
                problems.append(f"flow: {runbook.flow} is not a Prefect flow (decorate it with @flow)")
            runbook._flow = flow
        except Exception as exc:  # any import failure is a catalog error, named
            problems.append(f"flow: cannot import {runbook.flow}: {type(exc).__name__}: {exc}")
    try:
        model = _import(runbook.parameters)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            problems.append(f"parameters: {runbook.parameters} is not a pydantic model class")
        else:
            runbook._model = model
    except Exception as exc:
        problems.append(f"parameters: cannot import {runbook.parameters}: {type(exc).__name__}: {exc}")
    if flows and runbook.plan is not None:
        try:
            runbook._planner = _import(runbook.plan)
        except Exception as exc:
            problems.append(f"plan: cannot import {runbook.plan}: {type(exc).__name__}: {exc}")
    if runbook._model is not None:
        names = set(runbook._model.model_fields)
        allowed = ", ".join(runbook._model.model_fields)
        try:
            unknown = _template_variables(runbook.lock) - names
            if unknown:
                problems.append(f"lock: refers to {', '.join(sorted(unknown))}, not parameters (allowed: {allowed})")
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"lock: template does not parse: {exc}")
        for index, trigger in enumerate(runbook.triggers):
            for key, template in trigger.params.items():
                if key not in names:
                    problems.append(f"triggers[{index}].params.{key}: not a parameter (allowed: {allowed})")
                elif key in file_parameters(runbook):
                    problems.append(f"triggers[{index}].params.{key}: names a file, which is never taken from an alert")
                try:
                    TEMPLATES.parse(template)
                except jinja2.TemplateSyntaxError as exc:
                    problems.append(f"triggers[{index}].params.{key}: template does not parse: {exc}")
    if problems:
        raise CatalogError(f"{source} is invalid:\n" + "\n".join(f"  {line}" for line in problems))


class Catalog:
    """Every runbook of a directory, by id."""

    def __init__(self, runbooks: list[Runbook], directory: Path):
        self.directory = directory
        self._runbooks = {runbook.id: runbook for runbook in runbooks}

    def __iter__(self):
        return iter(sorted(self._runbooks.values(), key=lambda runbook: runbook.id))

    def __len__(self) -> int:
        return len(self._runbooks)

    def get(self, runbook_id: str) -> Runbook:
        if runbook_id not in self._runbooks:
            known = ", ".join(sorted(self._runbooks)) or "none"
            raise NotFoundError(f"no runbook {runbook_id!r} in {self.directory} (runbooks: {known})"
                                f"{did_you_mean(runbook_id, self._runbooks)}")
        return self._runbooks[runbook_id]


def _catalog_files(directory: Path, team: Path | None) -> list[Path]:
    """The runbook files of the catalog directory and of a team's own one (made importable)."""
    files: list[Path] = []
    for folder, setting in ((directory, "RUNBOOK_CATALOG"), (team, "RUNBOOK_TEAM_CATALOG")):
        if folder is None:
            continue
        if not folder.is_dir():
            raise CatalogError(f"{folder} is not a directory of runbook files (set {setting})")
        if folder == team:
            make_importable(folder)
        files += sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    return files


def catalog_signature(directory: Path, team: Path | None = None) -> tuple:
    """What loading the catalog reads: its runbook files, each with its size and modification time.
    A catalog loaded earlier is the one loading it again would give while this stays the same."""
    return (str(directory), str(team), tuple(
        (str(path), stat.st_mtime_ns, stat.st_size) for path in _catalog_files(directory, team) for stat in [path.stat()]))


def _catalog_directory(directory: Path, team: Path | None) -> Path:
    return directory if team is None else Path(f"{directory} and {team}")


def load_catalog(directory: Path, team: Path | None = None) -> Catalog:
    """Load every *.yaml / *.yml in `directory`, and in a team's own catalog directory `team` (its YAML
    and the Python modules its flows live in); the first bad file stops the load with its error."""
    runbooks: list[Runbook] = []
    seen: dict[str, str] = {}
    for path in _catalog_files(directory, team):
        runbook = load_runbook(path)
        if runbook.id in seen:
            raise CatalogError(f"{path}: id {runbook.id!r} is defined twice (also in {seen[runbook.id]})")
        seen[runbook.id] = str(path)
        runbooks.append(runbook)
    return Catalog(runbooks, _catalog_directory(directory, team))


class CatalogReport(NamedTuple):
    """The good runbooks of a catalog as a Catalog, and each broken file with its error."""

    catalog: Catalog
    broken: dict[str, str]  # path -> the CatalogError's message


def load_catalog_report(directory: Path, team: Path | None = None, resolve: bool = True) -> CatalogReport:
    """Like load_catalog, but a bad file is reported instead of stopping the load (for `list` and
    `doctor`). resolve=False does not import the flows (see load_runbook)."""
    runbooks: list[Runbook] = []
    broken: dict[str, str] = {}
    seen: dict[str, str] = {}
    for path in _catalog_files(directory, team):
        try:
            runbook = load_runbook(path, resolve=resolve)
        except CatalogError as exc:
            broken[str(path)] = str(exc)
            continue
        if runbook.id in seen:
            broken[str(path)] = f"{path}: id {runbook.id!r} is defined twice (also in {seen[runbook.id]})"
            continue
        seen[runbook.id] = str(path)
        runbooks.append(runbook)
    return CatalogReport(Catalog(runbooks, _catalog_directory(directory, team)), broken)


def make_importable(directory: Path) -> None:
    """Let this process, and the processes it starts (executors, a runner's or worker's flow runs),
    import the Python modules of a team's catalog directory."""
    folder = str(directory.resolve())
    if folder not in sys.path:
        sys.path.append(folder)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if folder not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, folder])
