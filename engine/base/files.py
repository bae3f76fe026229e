"""Files named by runbook parameters (e.g. kafka-replay's `from_file`), read safely.

Only on the CLI: chat and alert triggers may never name a file (see catalog.file_parameters). Even
there a file is read only when it is a regular file no larger than the limit, and as UTF-8 text;
errors say what is wrong with the file and never quote what is in it.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from mq_runbooks.base.errors import ParameterError

MAX_PARAMETER_FILE_BYTES = 10 * 1024 * 1024


def read_parameter_file(path: str | Path, limit: int = MAX_PARAMETER_FILE_BYTES, *, runbook: str,
                        parameter: str) -> str:
    """The text of the file `path`, for the parameter `parameter` of `runbook`.

    Raises ParameterError when it is not a regular file (a device, FIFO or directory), is larger than
    `limit` bytes (checked before reading, and again while reading), or is not UTF-8 text.
    """
    def refuse(reason: str) -> ParameterError:
        return ParameterError(runbook, [(parameter, f"{path}: {reason}")])

    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise refuse(f"cannot open it ({exc.strerror})") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise refuse("not a regular file (a device, pipe or directory); give a CSV file")
        if info.st_size > limit:
            raise refuse(f"{info.st_size} bytes is larger than the {limit} bytes allowed")
        chunks, size = [], 0
        while size <= limit:  # the file may grow after the check: never read more than limit + 1
            chunk = os.read(descriptor, min(1024 * 1024, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise refuse(f"cannot read it ({exc.strerror})") from None
    finally:
        os.close(descriptor)
    data = b"".join(chunks)
    if len(data) > limit:
        raise refuse(f"larger than the {limit} bytes allowed")
    if b"\0" in data:
        raise refuse("a binary file (it contains NUL bytes); give a text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse(f"not UTF-8 text (an invalid byte at position {exc.start}); give a text file") from None
