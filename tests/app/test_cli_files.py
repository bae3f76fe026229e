"""Files named by parameters on the CLI (kafka-replay's from_file): only regular files up to a size
limit, read as text, and errors that say what is wrong in one line without quoting the file. The
memory of the command stays bounded whatever the path names (a device, a huge file). And the files
the engine writes (snapshots, run logs, drafts) have their modes whatever the umask."""
from __future__ import annotations

import os
import resource
import subprocess

import pytest

from mq_runbooks.base.errors import ParameterError
from mq_runbooks.base.files import MAX_PARAMETER_FILE_BYTES, read_parameter_file
from tests.app.test_cli import RUNBOOK

# Far below the 20 GiB file of the test: reading it whole could not stay under this.
ADDRESS_SPACE_LIMIT = 6 * 1024**3


def limited_runbook(*args: str) -> subprocess.CompletedProcess:
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))

    return subprocess.run([str(RUNBOOK), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"}, preexec_fn=limit_memory)


def plan_from_file(path) -> subprocess.CompletedProcess:
    return limited_runbook("plan", "kafka-replay", "-p", "cluster=primary", "-p", "group=no-such-group",
                           "-p", f"from_file={path}")


def test_a_device_a_binary_file_and_a_huge_file_are_bad_input_in_one_line(tmp_path):
    binary = tmp_path / "binary.bin"
    binary.write_bytes(b"DB_PASSWORD=hunter2\0\x01\x02" + bytes(range(256)) * 64)
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("caf\xe9-hunter2,0,1\n".encode("latin-1"))
    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as handle:  # sparse: 20 GiB that take no disk space
        handle.truncate(20 * 1024**3)
    cases = {"/dev/zero": "not a regular file", str(tmp_path): "not a regular file",
             str(binary): "a binary file", str(latin): "not UTF-8 text",
             str(huge): f"is larger than the {MAX_PARAMETER_FILE_BYTES} bytes allowed",
             str(tmp_path / "missing.csv"): "cannot open it (No such file or directory)"}
    for path, expected in cases.items():
        result = plan_from_file(path)
        assert result.returncode == 2, (path, result.stderr)
        assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines == ["error: invalid parameters for runbook 'kafka-replay':", lines[1]], (path, lines)
        assert lines[1].startswith(f"  from_file: {path}: ") and expected in lines[1], (path, lines[1])


def test_a_file_that_is_not_the_csv_is_refused_by_line_without_quoting_it(tmp_path):
    passwd_like = tmp_path / "passwd"
    passwd_like.write_text("root:x:0:0:root:/root:/bin/bash\nDB_PASSWORD=hunter2\n")
    result = plan_from_file(passwd_like)
    assert result.returncode == 2, result.stderr
    assert "line 1: expected 3 comma-separated fields topic,partition,offset, found 1" in result.stderr
    assert "root" not in result.stderr.replace(str(passwd_like), "") and "hunter2" not in result.stderr


def test_read_parameter_file_checks_size_before_and_while_reading(tmp_path):
    path = tmp_path / "offsets.csv"
    path.write_text("t,0,1\n")
    assert read_parameter_file(path, runbook="r", parameter="p") == "t,0,1\n"
    with pytest.raises(ParameterError, match=r"p: .*offsets.csv: 6 bytes is larger than the 5 bytes allowed"):
        read_parameter_file(path, 5, runbook="r", parameter="p")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it must neither block nor read
    with pytest.raises(ParameterError, match="not a regular file"):
        read_parameter_file(fifo, runbook="r", parameter="p")


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_files_the_engine_writes_have_their_modes_whatever_the_umask(tmp_path, umask):
    import os
    import stat

    from mq_runbooks.base.files import GROUP_READABLE, make_directory, open_private_log, write_file

    def mode(path) -> str:
        return oct(stat.S_IMODE(path.stat().st_mode))

    previous = os.umask(umask)
    try:
        snapshot = write_file(tmp_path / "state" / "snapshots" / "s.csv", "t,0,1\n")
        draft = write_file(tmp_path / "drafts" / "team" / "d.md", "# draft\n", GROUP_READABLE)
        os.close(open_private_log(tmp_path / "state" / "run-logs" / "r.log"))
        existing = make_directory(tmp_path)  # exists: keeps its mode
    finally:
        os.umask(previous)
    assert [mode(snapshot), mode(snapshot.parent), mode(snapshot.parent.parent)] == ["0o600", "0o700", "0o700"]
    assert [mode(draft), mode(draft.parent), mode(draft.parent.parent)] == ["0o640", "0o750", "0o750"]
    assert [mode(tmp_path / "state" / "run-logs" / "r.log"), mode(tmp_path / "state" / "run-logs")] == ["0o600", "0o700"]
    assert existing == tmp_path and snapshot.read_text() == "t,0,1\n" and list(snapshot.parent.iterdir()) == [snapshot]
