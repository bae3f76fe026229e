"""Files: those named by runbook parameters (e.g. kafka-replay's `from_file`), read safely; and
those the engine writes (snapshots, run logs, postmortem drafts), never readable by others.

Only on the CLI may a parameter name a file: chat and alert triggers never may (see
catalog.file_parameters). Even there a file is read only when it is a regular file no larger than
the limit, and as UTF-8 text; errors say what is wrong with the file and never quote what is in it.

What the engine writes holds what runs saw and changed: each file is created 0600 (PRIVATE) in a
directory created 0700, or 0640 in 0750 (GROUP_READABLE) for what a team reads on the host (the
postmortem drafts), whatever the process's umask would allow. An existing directory keeps its mode.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

PRIVATE = 0o600
GROUP_READABLE = 0o640
# The umask of a run's process: what it creates that we do not write ourselves (Prefect's local
# results, a library's temporary files) is its user's only.
RUN_UMASK = 0o077


def directory_mode(file_mode: int) -> int:
    """The mode of a directory holding files of `file_mode`: 0600 -> 0700, 0640 -> 0750."""
    return file_mode | ((file_mode & 0o444) >> 2)


def make_directory(path: str | Path, file_mode: int = PRIVATE) -> Path:
    """`path` as a directory; it and each parent created here get directory_mode(file_mode) (so a
    group that may read the files can reach them), whatever the umask. Existing ones are left as they are."""
    path = Path(path)
    missing = []
    while not path.is_dir() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
            os.chmod(directory, directory_mode(file_mode))  # mkdir's mode would pass through the umask
        except FileExistsError:  # made meanwhile by another process: it keeps its mode
            pass
    return missing[0] if missing else path


def write_file(path: str | Path, content: str | bytes, mode: int = PRIVATE) -> Path:
    """Write `content` (text as UTF-8) to `path` atomically (a temporary file beside it, renamed),
    the file having `mode`; its directory is made as make_directory makes it."""
    path = Path(path)
    make_directory(path.parent, mode)
    data = content.encode("utf-8") if isinstance(content, str) else content
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def open_private_log(path: str | Path, truncate: bool = False) -> int:
    """A file descriptor appending to the log `path` (emptied first with `truncate`), created 0600
    (an existing log is made 0600)."""
    path = Path(path)
    make_directory(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | (os.O_TRUNC if truncate else 0)
    descriptor = os.open(path, flags, PRIVATE)
    os.fchmod(descriptor, PRIVATE)
    return descriptor

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
