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

from instructkit.errors import InstructkitError
from instructkit.evaluate import code_exec
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
    assert result.passed and result.returncode is not None
    assert "working" in result.output
    assert check_program(_humaneval("    return a + b\n"), allow=True)


def test_failing_assert_fails():
    result = run_program(_humaneval("    return a - b\n"))
    assert result.status == "failed" and "AssertionError" in result.output


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
        "def host_ids():\n"  # /proc numbers processes as the host sees them, even in a PID namespace
        "    fields = open('/proc/self/stat').read().rsplit(')', 1)[1].split()\n"
        "    return int(os.readlink('/proc/self')), int(fields[2])\n"
        "r, w = posix.pipe()\n"
        "for _ in range(3):\n"
        "    if posix.fork() == 0:\n"
        "        posix.write(w, b'%d\\n' % host_ids()[0])\n"
        "        while True:\n"
        "            time.sleep(1)\n"
        "buf = b''\n"
        "while buf.count(b'\\n') < 3:\n"
        "    buf += posix.read(r, 64)\n"
        "kids = ' '.join(buf.decode().split())\n"
        "posix.write(1, ('KIDS %d %s\\n' % (host_ids()[1], kids)).encode())\n"
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


# --- The pass signal is out of the solution's reach --------------------------------------------
# Each attack is appended to a wrong solution (`return a - b`) at module level, so it runs in the
# solution process before any call. A pass can only come from the judge's own asserts.

WRONG = "    return a - b\n"
_FIND_SECRETS = (
    "import gc, re, sys\n"
    "hexes = set()\n"
    "f = sys._getframe()\n"
    "while f is not None:\n"
    "    for v in list(f.f_locals.values()) + list(f.f_globals.values()):\n"
    "        if isinstance(v, str) and re.fullmatch('[0-9a-f]{32}', v):\n"
    "            hexes.add(v)\n"
    "    f = f.f_back\n"
    "for o in gc.get_objects():\n"
    "    if isinstance(o, dict):\n"
    "        hexes.update(v for v in o.values() if isinstance(v, str) and re.fullmatch('[0-9a-f]{32}', v))\n"
)
ATTACKS = {
    "sys.exit(0)": "import sys\nsys.exit(0)\n",
    "os._exit(0)": "import os\nos._exit(0)\n",
    "raise SystemExit": "raise SystemExit\n",
    # a per-run token anywhere in the process (the old design) is found and reported
    "report a token read from frames and gc": _FIND_SECRETS
    + "import os\nfor h in hexes:\n    os.write(1, ('\\n' + h + '\\n').encode())\nos._exit(0)\n",
    "patch builtins, AssertionError, exit, print": (
        "import builtins, os, sys\n"
        "builtins.AssertionError = type('Nope', (Exception,), {})\n"
        "builtins.print = lambda *a, **k: None\n"
        "sys.exit = os._exit = lambda *a: None\n"
        "builtins.__import__ = __import__\n"
    ),
    "always-equal result": (
        "class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
        "def add(a, b):\n    return Yes()\n"
    ),
    "always-equal int subclass": (
        "class Yes(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def add(a, b):\n    return Yes(0)\n"
    ),
    # pre-load every descriptor (the reply pipe included) with passes, wrong answers, tokens
    "write to fds 0-255": _FIND_SECRETS + "import os\nposix = os.stat.__self__\n"
    "junk = b'PASS\\n0\\n[\"ok\", [\"i\", \"5\"]]\\n' + b''.join(h.encode() + b'\\n' for h in hexes)\n"
    "for fd in range(256):\n"
    "    try:\n        posix.write(fd, junk)\n    except OSError:\n        pass\n"
    "posix._exit(0)\n",
    "read /proc/self/environ and the parent's": (
        "import os\n"
        "print(open('/proc/self/environ', 'rb').read())\n"
        "try:\n    print(open('/proc/%d/environ' % os.getppid(), 'rb').read())\n"
        "except OSError as e:\n    print('denied', e)\n"
    ),
}


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_a_wrong_solution_cannot_forge_a_pass(attack):
    result = run_program(_humaneval(WRONG + attack))
    assert result.status == "failed", result.output
    assert not check_program(_humaneval(WRONG + attack), allow=True)


def _judge_and_ancestors() -> str:
    """Attack code: host pids of the parent (the evaluating process) and of the judge."""
    return (
        "import os\n"
        "def stat(pid):\n"
        "    return open('/proc/%s/stat' % pid).read().rsplit(')', 1)[1].split()\n"
        "targets, pid = [], int(os.readlink('/proc/self'))\n"
        "group = stat(pid)[2]\n"
        "while stat(pid)[2] == group:\n"  # up past the solution's own processes to the parent
        "    pid = int(stat(pid)[1])\n"
        "targets.append(pid)\n"
        "for name in os.listdir('/proc'):\n"
        "    try:\n"
        "        if name.isdigit() and b'__judge__' in open('/proc/%s/cmdline' % name, 'rb').read():\n"
        "            targets.append(int(name))\n"
        "    except OSError:\n"
        "        pass\n"
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl")
@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "no-namespaces"])
def test_the_judge_and_the_parent_cannot_be_traced_or_written(namespaces, monkeypatch):
    """Non-dumpable judge and parent (and, where available, a separate user namespace): their
    memory and descriptors refuse the solution even without the namespaces."""
    if namespaces and not network_isolation_available():
        pytest.skip("no unprivileged user namespaces here")
    monkeypatch.setattr(code_exec, "network_isolation_available", lambda: namespaces)
    attack = _judge_and_ancestors() + (
        "import sys\ndel sys.modules['ctypes'], sys.modules['_ctypes']\n"
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "for t in targets:\n"
        "    for path in ('/proc/%d/mem' % t, '/proc/%d/fd/0' % t, '/proc/%d/fd/3' % t):\n"
        "        try:\n"
        "            os.close(os.stat.__self__.open(path, os.O_WRONLY))\n"
        "            print('OPENED', path)\n"
        "        except OSError:\n"
        "            pass\n"
        "    if libc.ptrace(0x4206, t, 0, 0) == 0:\n"  # PTRACE_SEIZE: attaches without stopping
        "        print('ATTACHED', t)\n"
        "print('SCANNED', len(targets))\n"
    )
    result = run_program(_humaneval(WRONG + attack))
    assert "SCANNED" in result.output and result.status == "failed"
    assert "OPENED" not in result.output and "ATTACHED" not in result.output, result.output


@pytest.mark.skipif(not network_isolation_available(), reason="needs a private PID namespace")
def test_signalling_the_parent_and_the_judge_fails_and_hurts_nobody():
    attack = _judge_and_ancestors() + (
        "import signal\nposix = os.stat.__self__\n"
        "for t in targets:\n"
        "    for sig in (signal.SIGSTOP, signal.SIGKILL):\n"
        "        try:\n            posix.kill(t, sig)\n        except OSError:\n            pass\n"
        "posix.kill(-1, signal.SIGKILL)\n"  # everything it may signal: only its own namespace
    )
    result = run_program(_humaneval(WRONG + attack))
    assert result.status == "failed"
    assert run_program(_humaneval("    return a + b\n")).passed  # the parent still runs and judges


def test_a_hanging_solution_times_out():
    result = run_program(_humaneval("    while True:\n        pass\n"), FAST)
    assert result.status == "timeout" and not result.passed


def test_results_cross_as_plain_data_and_exceptions_keep_their_type():
    """Real solutions with tuples, dicts, sets, floats, None and raised errors still pass."""
    prompt = 'def helper(x):\n    return x * 2\n\ndef solve(x):\n    """Return several kinds of value."""\n'
    completion = (
        "    if x < 0:\n        raise ValueError('negative')\n"
        "    return (helper(x), {'k': [1.5, None, float('inf')]}, {1, 2}, 'é', b'\\x00', True)\n"
    )
    test = (
        "def check(candidate):\n"
        "    assert candidate(2) == (4, {'k': [1.5, None, float('inf')]}, {1, 2}, 'é', b'\\x00', True)\n"
        "    assert type(candidate(2)[0]) is int and helper(3) == 6\n"
        "    try:\n        candidate(-1)\n    except ValueError as e:\n        assert 'negative' in str(e)\n"
        "    else:\n        assert False\n"
    )
    assert run_program(humaneval_program(prompt, completion, test, "solve")).passed
    wrong = completion.replace("helper(x)", "helper(x) + 1")
    assert run_program(humaneval_program(prompt, wrong, test, "solve")).status == "failed"


def test_a_missing_entry_point_fails_and_a_broken_test_is_an_error():
    assert run_program(_humaneval("    return a + b\n\nadd = None\ndel add\n")).status == "failed"
    broken = humaneval_program(PROMPT, "    return a + b\n", "def chek(candidate):\n    pass\n", "add")
    assert run_program(broken).status == "error"
    with pytest.raises(InstructkitError, match="judge could not run"):
        check_program(broken, allow=True)
