"""The driver's test faults (kit/faults.py): what RUNBOOK_INJECT_FAULT may name, and where each fires."""
import pytest

from mq_runbooks.base.errors import BrokerError, ConfigError
from mq_runbooks.kit.faults import STALL_S, Fault


def test_a_step_point_fires_at_the_steps_its_key_matches_only():
    fault = Fault.parse("fail-before:move-offsets")
    assert fault.hits("fail-before", "move-offsets")
    assert not fault.hits("fail-after", "move-offsets") and not fault.hits("fail-before", "move-offsets-2")
    assert not fault.hits("verify")
    first_batch = Fault.parse("fail-after:send-back:*")
    assert first_batch.hits("fail-after", "send-back:orders:1-500") and not first_batch.hits("fail-after", "park-poison")


def test_the_error_is_a_brokers_and_names_the_step_and_the_point():
    for point, words in (("fail-before", "failed before its change"),
                         ("fail-during", "failed part-way, after its change reached the broker"),
                         ("fail-after", "was applied, then the run failed")):
        error = Fault.parse(f"{point}:switch").error("switch")
        assert isinstance(error, BrokerError) and str(error) == f"injected fault: step switch {words}"


def test_stall_after_takes_seconds_and_keys_with_colons():
    assert Fault.parse("stall-after:alter-offsets") == Fault("stall-after", "alter-offsets", STALL_S)
    assert Fault.parse("stall-after:alter-offsets:20") == Fault("stall-after", "alter-offsets", 20.0)
    assert Fault.parse("stall-after:offsets:billing") == Fault("stall-after", "offsets:billing", STALL_S)


def test_verify_and_nothing():
    assert Fault.parse("verify").hits("verify")
    assert Fault.parse("") is None and Fault.parse(None) is None


@pytest.mark.parametrize("text", ["canary", "apply-partial", "fail-before", "fail-before:", "verify:x", "explode:step"])
def test_anything_else_is_refused_saying_what_is_allowed(text):
    with pytest.raises(ConfigError, match="expected verify or POINT:STEP_KEY with POINT one of fail-before, "
                                          "fail-during, fail-after, stall-after"):
        Fault.parse(text)
