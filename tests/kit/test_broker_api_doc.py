"""The guide documents the broker API runbooks use (issue 27, item 2): every public method of Env and
Run and of the client each broker method returns has an entry with its docstring, and the committed
section is what docs/reference.py generates from the code now."""
from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path

import pytest

from mq_runbooks.kit.driver import Env, Run

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "writing-runbooks.md"


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("broker_api_reference", REPO / "docs" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed_section(reference) -> str:
    guide = GUIDE.read_text()
    return reference.BEGIN + guide.split(reference.BEGIN, 1)[1].split(reference.END, 1)[0] + reference.END


def test_the_committed_section_is_current(reference):
    assert committed_section(reference) == reference.section(), (
        "docs/writing-runbooks.md's broker API is stale: run .venv/bin/python docs/reference.py")


@pytest.mark.parametrize("cls,receiver", [(Env, "env"), (Run, "run")])
def test_every_public_method_of_env_and_run_has_a_documented_entry(reference, cls, receiver):
    section = committed_section(reference)
    own = [name for name in reference.public_members(cls) if cls is Env or name not in reference.public_members(Env)]
    assert own, "the API is listed"
    for name in own:
        member = inspect.getattr_static(cls, name)
        function = member.fget if isinstance(member, property) else member
        assert inspect.getdoc(function), f"{cls.__name__}.{name} has no docstring to document it"
        assert re.search(rf"^- `{receiver}\.{name}[(`]", section, re.M), f"{receiver}.{name} has no entry in the guide"


def test_every_broker_client_is_documented_with_what_runbooks_need(reference):
    section = committed_section(reference)
    assert "(undocumented)" not in section, [line for line in section.splitlines() if "(undocumented)" in line]
    for _title, method, client, _types in reference.CLIENTS:
        assert f"- `env.{method}(cluster: str) -> {client.__name__}`" in section
        for name in reference.public_members(client):
            if name not in reference._LEFT_OUT:
                assert f"- `{method}.{name}" in section, f"{client.__name__}.{name} is not in the guide"
    for needed in ["kafka.describe_topic_config(", "kafka.alter_topic_config(", "kafka_records.read_record(",
                   "env.kafka_client_config(", "rabbitmq.policies(", "rabbitmq.put_policy(", "rabbitmq.delete_policy(",
                   "env.redis(", "redis.key(", "redis.set_key(", "redis.stream_info("]:
        assert f"- `{needed}" in section, needed
    # The records' fields, with what each means.
    for field in ["`restore_command`", "`restored`", "`ok`", "`path`", "`csv`"]:
        assert f"  - {field}:" in section, field


def test_the_generator_rewrites_only_its_section(reference, tmp_path, monkeypatch):
    stale = GUIDE.read_text().replace("- `env.redis(", "- `env.redis_old(")
    monkeypatch.setattr(reference, "current_guide", lambda: stale)
    assert reference.main(["--check"]) == 1
    assert reference.with_section(stale) == GUIDE.read_text()
