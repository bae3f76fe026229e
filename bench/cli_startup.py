"""Benchmark: the CPU time of `runbook --help`, `runbook list` and `runbook show ID` against a fresh
`python -c "import prefect"`, measured in the same run (the machine is shared and noisy).

    .venv/bin/python bench/cli_startup.py [--runs N]      (default 9; needs no stack)

Each variant runs as its own process (the installed console script, or the interpreter for the
reference); its CPU time is the child's user + system time (os.wait4's rusage), so time spent waiting
for a busy machine does not count. Variants are interleaved and their order rotated each round.
Target (issue #12): each CLI command that does not talk to Prefect <= 0.25x the reference.

Writes bench/results/cli_startup.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results" / "cli_startup.md"
TARGET = 0.25
REFERENCE = 'python -c "import prefect"'
VARIANTS = {
    REFERENCE: [sys.executable, "-c", "import prefect"],
    "runbook --help": [str(BIN / "runbook"), "--help"],
    "runbook list": [str(BIN / "runbook"), "list"],
    "runbook show kafka-replay": [str(BIN / "runbook"), "show", "kafka-replay"],
}
CHECKED = ("runbook --help", "runbook list", "runbook show kafka-replay")  # the commands that must not import Prefect


def cpu_seconds(command: list[str]) -> float:
    """User + system CPU seconds of one run of `command` (and its children); fails if it fails."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                               env={**os.environ, "COLUMNS": "100"})
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {process.returncode}: {process.stderr.read().decode()}")
    process.stderr.close()
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    names = list(VARIANTS)
    for name in names:  # warm the page cache and the .pyc files; not timed
        cpu_seconds(VARIANTS[name])
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(args.runs):
        order = names[round_number % len(names):] + names[:round_number % len(names)]
        for name in order:
            samples[name].append(cpu_seconds(VARIANTS[name]))
    reference = statistics.median(samples[REFERENCE])
    lines = [
        "# CLI start-up: CPU time of a command vs a fresh `import prefect`",
        "",
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()} (Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, shared with other work) by "
        f"`bench/cli_startup.py --runs {args.runs}`: each variant a fresh process, CPU = user + system "
        "time of the child, rounds interleaved with the order rotated.",
        "",
        "| variant | median CPU ms | min ms | max ms | ratio to `import prefect` |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in names:
        values = samples[name]
        ratio = statistics.median(values) / reference
        lines.append(f"| `{name}` | {statistics.median(values) * 1000:.0f} | {min(values) * 1000:.0f} | "
                     f"{max(values) * 1000:.0f} | {ratio:.2f}x |")
    lines.append("")
    for name in CHECKED:
        ratio = statistics.median(samples[name]) / reference
        verdict = "met" if ratio <= TARGET else f"missed by {ratio - TARGET:.2f}x"
        lines.append(f"- `{name}`: {ratio:.2f}x of the reference; target <= {TARGET}x: {verdict}.")
    lines.append("- `--help`, `list` and `show` import no Prefect (checked by tests/app/test_cli.py"
                 "::test_commands_that_need_no_prefect_do_not_import_it): `show` reads the catalog files "
                 "without importing their modules, then imports only its runbook's parameter model, which "
                 "lives in a module that does not import Prefect (e.g. flows/kafka_replay_params.py).")
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
