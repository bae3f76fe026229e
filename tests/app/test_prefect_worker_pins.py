"""The Prefect internals app/preloaded_worker.py relies on are still there, with the shape it uses:
this fails on the Prefect release that changes one, before a worker meets it at run time."""
from __future__ import annotations

import inspect

import pytest
from prefect._internal.observers import FlowRunCancellingObserver
from prefect.workers.process import ProcessWorker

from mq_runbooks.app.preloaded_worker import OBSERVER_METHODS, PRIVATE_ATTRIBUTES, PRIVATE_METHODS


def _parameters(function) -> tuple[str, ...]:
    return tuple(inspect.signature(function).parameters)


@pytest.mark.parametrize("name", sorted(PRIVATE_METHODS))
def test_each_private_worker_method_takes_what_the_adapter_passes(name):
    method = getattr(ProcessWorker, name, None)
    assert callable(method), f"ProcessWorker.{name} is gone"
    wanted = PRIVATE_METHODS[name]
    assert _parameters(method)[:len(wanted)] == wanted, (name, _parameters(method))


def test_the_overridden_methods_are_still_coroutines_as_the_adapter_overrides_them():
    for name in ("_submit_run", "_give_worker_labels_to_flow_run", "_propose_crashed_state"):
        assert inspect.iscoroutinefunction(getattr(ProcessWorker, name)), name
    assert not inspect.iscoroutinefunction(ProcessWorker._release_limit_slot)


def test_each_private_attribute_is_set_by_the_workers_init():
    worker = ProcessWorker(work_pool_name="pins")
    missing = [name for name in PRIVATE_ATTRIBUTES if name not in vars(worker)]
    assert not missing, f"ProcessWorker.__init__ no longer sets {missing}"
    assert isinstance(worker._submitting_flow_run_ids, set)


@pytest.mark.parametrize("name", sorted(OBSERVER_METHODS))
def test_the_cancelling_observer_method_called_is_there(name):
    method = getattr(FlowRunCancellingObserver, name, None)
    assert callable(method) and _parameters(method) == OBSERVER_METHODS[name], name
