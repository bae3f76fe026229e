"""The executor's own shortcuts: Prefect's settings not read twice in a forked run, and the suspension
observer subscribed beside the run instead of before it."""
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

import prefect.flow_engine as engine
import pytest
from prefect.settings import get_current_settings

from mq_runbooks.app import executor
from mq_runbooks.base.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_a_forked_run_reads_prefects_settings_again_only_when_its_environment_changes_them(monkeypatch) -> None:
    monkeypatch.setattr(executor, "_preloaded_settings", None)
    assert not executor.preloaded_settings_hold(os.environ)  # not a forked run: always read

    executor.remember_preloaded_settings()
    written = get_current_settings().to_environment_variables(exclude_unset=True)
    assert "PREFECT_API_URL" in os.environ and written
    assert executor.preloaded_settings_hold(dict(os.environ))
    # What a worker passes on: its environment with its settings as Prefect writes them out.
    assert executor.preloaded_settings_hold({**os.environ, **written})
    assert not executor.preloaded_settings_hold({**os.environ, "PREFECT_API_URL": "http://elsewhere:4200/api"})
    assert not executor.preloaded_settings_hold({**os.environ, "PREFECT_LOGGING_LEVEL": "DEBUG"})
    without = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    assert not executor.preloaded_settings_hold(without)

def test_the_suspension_observer_subscribes_beside_the_run_and_is_left_at_its_end(monkeypatch) -> None:
    """Prefect's observer waits for its event subscription before the run may start; with the
    executor's wrapper the run goes on at once and the observer is still entered, then left."""
    subscribing, subscribed, left = threading.Event(), threading.Event(), threading.Event()
    seen = []

    @contextmanager
    def observer(flow_run_id, request):  # stands in for Prefect's: a subscription that takes a while
        seen.append((flow_run_id, request))
        subscribing.set()
        subscribed.wait(timeout=5)
        subscribed.set()
        try:
            yield
        finally:
            left.set()

    monkeypatch.setattr(engine, "observe_flow_run_suspension", observer)
    with executor.suspension_observer_in_background():
        with engine.observe_flow_run_suspension("run-id", "request"):
            assert not subscribed.is_set(), "the run waited for the observer's subscription"
            assert subscribing.wait(timeout=10)
            subscribed.set()
        assert left.wait(timeout=10)
    assert seen == [("run-id", "request")]
    assert engine.observe_flow_run_suspension is observer


def test_without_prefects_observer_the_run_goes_on_as_prefect_does(monkeypatch) -> None:
    monkeypatch.delattr(engine, "observe_flow_run_suspension")
    with executor.suspension_observer_in_background():
        assert not hasattr(engine, "observe_flow_run_suspension")



def test_a_forked_run_takes_the_starters_catalog_only_while_its_files_are_unchanged(monkeypatch, tmp_path) -> None:
    catalog_dir = tmp_path / "runbooks"
    catalog_dir.mkdir()
    shutil.copy(REPO / "mq_runbooks" / "runbooks" / "kafka-replay.yaml", catalog_dir)
    settings = Settings(catalog=catalog_dir)
    monkeypatch.setattr(executor, "_preloaded_catalog", None)
    executor.remember_preloaded_catalog(settings)
    preloaded = executor._catalog(settings)
    assert preloaded is executor._preloaded_catalog[1] and preloaded.get("kafka-replay")

    runbook = catalog_dir / "kafka-replay.yaml"
    runbook.write_text(runbook.read_text().replace("title: Replay a consumer group", "title: Replay a group"))
    assert executor._catalog(settings).get("kafka-replay").title.startswith("Replay a group from")

    shutil.copy(REPO / "mq_runbooks" / "runbooks" / "kafka-failover.yaml", catalog_dir)  # a runbook added
    assert executor._catalog(settings).get("kafka-failover")
    other = Settings(catalog=REPO / "mq_runbooks" / "runbooks")  # another catalog than the starter's
    assert executor._catalog(other) is not preloaded and executor._catalog(other).get("rabbitmq-failover")


def test_a_catalog_with_a_broken_file_is_not_kept_and_each_run_reports_it(monkeypatch, tmp_path) -> None:
    from mq_runbooks.base.errors import CatalogError

    shutil.copy(REPO / "mq_runbooks" / "runbooks" / "kafka-replay.yaml", tmp_path)
    (tmp_path / "broken.yaml").write_text("id: broken\n")
    settings = Settings(catalog=tmp_path)
    monkeypatch.setattr(executor, "_preloaded_catalog", None)
    executor.remember_preloaded_catalog(settings)
    assert executor._preloaded_catalog is None
    with pytest.raises(CatalogError, match="broken.yaml"):
        executor._catalog(settings)
