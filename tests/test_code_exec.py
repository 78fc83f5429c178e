"""Generated-code execution: a pass needs the harness to reach its end; limits and isolation hold.

Every program here really runs in a child process (no mocks). Programs that try to escape use the
bypasses a model could write (`os.stat.__self__` is the `posix` module, `socket._socket` the C
socket type), to show which protections are kernel-enforced rather than Python-level.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from instructkit.evaluate.code_exec import (
    ExecLimits,
    check_program,
    humaneval_program,
    network_isolation_available,
    run_program,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups and rlimits")

PROMPT = 'def add(a, b):\n    """Sum of a and b."""\n'
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
FAST = ExecLimits(timeout=1.0)


def _humaneval(completion: str) -> str:
    return humaneval_program(PROMPT, completion, TEST, "add")


def test_correct_completion_passes_and_keeps_its_output():
    result = run_program(_humaneval("    print('working')\n    return a + b\n"))
    assert result.passed and result.returncode == 0
    assert "working" in result.output
    assert check_program(_humaneval("    return a + b\n"), allow=True)


def test_failing_assert_fails():
    result = run_program(_humaneval("    return a - b\n"))
    assert result.status == "failed" and "AssertionError" in result.output


@pytest.mark.parametrize(
    "escape",
    ["import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit\n"],
    ids=["sys.exit", "os._exit", "SystemExit"],
)
def test_exiting_with_status_zero_before_the_asserts_fails(escape):
    """The exit status is 0 here, but the harness never reported its token."""
    program = humaneval_program(PROMPT, "    return a - b\n", escape + TEST, "add")
    result = run_program(program)
    assert result.returncode == 0 and result.status == "failed"
    assert not check_program(program, allow=True)


def test_infinite_loop_is_stopped_by_the_timeout():
    result = run_program("while True:\n    pass\n", FAST)
    assert result.status == "timeout" and not result.passed


def _group_member_alive(pid: int, pgid: int) -> bool:
    """True if `pid` still runs (not a zombie) in process group `pgid`."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z" and int(fields[2]) == pgid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("leader", ["exits", "hangs"])
def test_children_left_running_are_killed_with_the_group(leader):
    """Forks through the real `posix` module (past the guard); the group kill still gets them."""
    program = (
        "import os, time\n"
        "posix = os.stat.__self__\n"
        "kids = []\n"
        "for _ in range(3):\n"
        "    pid = posix.fork()\n"
        "    if pid == 0:\n"
        "        while True:\n"
        "            time.sleep(1)\n"
        "    kids.append(pid)\n"
        "posix.write(1, ('KIDS %d %s\\n' % (posix.getpgrp(), ' '.join(map(str, kids)))).encode())\n"
        + ("while True:\n    time.sleep(1)\n" if leader == "hangs" else "")
    )
    result = run_program(program, ExecLimits(timeout=1.0 if leader == "hangs" else 10.0))
    line = next(x for x in result.output.splitlines() if x.startswith("KIDS"))
    pgid, *kids = map(int, line.split()[1:])
    assert len(kids) == 3
    deadline = time.monotonic() + 10
    try:
        while any(_group_member_alive(k, pgid) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_group_member_alive(k, pgid) for k in kids)
    finally:
        for k in kids:
            if _group_member_alive(k, pgid):
                os.kill(k, signal.SIGKILL)


def test_memory_limit_makes_a_memory_hog_fail():
    program = "data = bytearray(200 << 20)\nassert len(data) == 200 << 20\n"
    assert run_program(program, ExecLimits(memory_mb=1024)).passed
    result = run_program(program, ExecLimits(memory_mb=128))
    assert result.status == "failed" and "MemoryError" in result.output


def test_file_size_limit_stops_large_files():
    program = "with open('big.bin', 'wb') as fh:\n    fh.write(b'x' * (3 << 20))\n"
    assert run_program(program, ExecLimits(file_size_mb=8)).passed
    assert run_program(program, ExecLimits(file_size_mb=1)).status == "failed"


@pytest.mark.parametrize(
    "write",
    [
        "open({p!r}, 'w').write('x')",
        "import pathlib\npathlib.Path({p!r}).write_text('x')",
        "import os\nos.close(os.open({p!r}, os.O_WRONLY | os.O_CREAT))",
        "import shutil\nopen('here.txt', 'w').write('x')\nshutil.copy('here.txt', {p!r})",
        "import os\nopen('here.txt', 'w').write('x')\nos.rename('here.txt', {p!r})",
    ],
    ids=["open", "pathlib", "os.open", "shutil.copy", "os.rename"],
)
def test_writes_outside_the_temporary_directory_fail(tmp_path, write):
    target = tmp_path / "outside.txt"
    result = run_program(write.format(p=str(target)))
    assert result.status == "failed" and "PermissionError" in result.output
    assert not target.exists()


def test_writes_inside_the_temporary_directory_work():
    program = (
        "import os, tempfile\n"
        "open('a.txt', 'w').write('x')\n"
        "os.makedirs('d/e')\n"
        "os.rename('a.txt', 'd/e/b.txt')\n"
        "with tempfile.NamedTemporaryFile('w') as fh:\n"
        "    fh.write('y')\n"
        "assert open('d/e/b.txt').read() == 'x'\n"
    )
    assert run_program(program).passed


@pytest.fixture
def listener():
    """A TCP server on 127.0.0.1 that records whether anyone connected."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    yield server
    server.close()


def _nobody_connected(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def test_socket_connect_fails(listener):
    port = listener.getsockname()[1]
    program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
    assert run_program(program).status == "failed"
    assert _nobody_connected(listener)


@pytest.mark.skipif(not network_isolation_available(), reason="no unprivileged network namespace here")
def test_network_namespace_blocks_connects_that_bypass_the_guard(listener):
    port = listener.getsockname()[1]
    program = (
        f"import socket\ns = socket._socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\n"
    )
    result = run_program(program)
    assert result.network_isolated and result.status == "failed"
    assert _nobody_connected(listener)
