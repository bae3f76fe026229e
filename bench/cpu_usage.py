"""Where the CPU of a benchmark went, from /proc: per process tree (a server and its children, e.g.
PostgreSQL's backends), the processes listening on a port, and the whole machine (other sessions
share its cores). Used by bench/alerts.py."""
from __future__ import annotations

import os
import time
from pathlib import Path


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float]]:
    """Every process: pid -> (parent pid, CPU seconds used so far: user + system, its own and its ended children's)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # its own CPU and that of its children that ended (PostgreSQL's backends come and go)
            found[int(entry.name)] = (int(fields[1]), sum(int(value) for value in fields[11:15]) / CLOCK_TICKS)
    return found


def tree_cpu(pids: list[int], processes: dict[int, tuple[int, float]] | None = None) -> float:
    """CPU seconds used so far by these processes and their descendants (e.g. PostgreSQL's backends)."""
    processes = _processes() if processes is None else processes
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0.0, [pid for pid in pids if pid in processes]
    while todo:
        pid = todo.pop()
        total += processes[pid][1]
        todo += children.get(pid, [])
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (every process, every core), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS  # all but idle and iowait


def listener_pids(port: int) -> list[int]:
    """The processes listening on a TCP port of this machine (ours only: others' fds are not readable)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(f"socket:[{fields[9]}]")
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class CpuSplit:
    """Where the CPU of a burst went: the sending client (this process), the replicas, the Prefect
    server and its database (when their ports are given), and the rest of the machine (other sessions)."""

    def __init__(self, prefect_pids: list[int], database_pids: list[int]) -> None:
        self.prefect_pids, self.database_pids = prefect_pids, database_pids
        self.replicas_gone = 0.0  # CPU of replicas killed during the burst, taken just before the kill

    def snapshot(self, replicas: list) -> dict[str, float]:
        """`replicas`: objects with a `process` (a subprocess.Popen)."""
        processes = _processes()
        return {"client": time.process_time(),
                "replicas": tree_cpu([r.process.pid for r in replicas], processes) + self.replicas_gone,
                "prefect": tree_cpu(self.prefect_pids, processes),
                "database": tree_cpu(self.database_pids, processes),
                "machine": machine_busy_seconds()}
