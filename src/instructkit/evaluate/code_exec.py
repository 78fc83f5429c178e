"""Run generated code against its unit tests in separate, limited, throw-away processes.

Model-written code is untrusted: execution is off unless the caller opts in (`allow_code_execution`).

**Who decides a pass.** A HumanEval check (`Check`) runs in two processes. The *solution process*
runs the untrusted code (prompt + completion) and only answers calls: it reads an argument list from
a pipe, calls the entry point, writes the result back as plain data (tagged JSON: numbers, strings,
lists, tuples, dicts, sets, nothing else). The *judge process* runs only trusted code (the problem's
prompt and test) with a stand-in `candidate` that forwards each call over the pipe and decodes the
answer into fresh built-in objects; the verdict is the judge's exit status, which the parent reads
with `waitpid`. The solution never holds the tests, the expected values or a token, so nothing in its
own memory, frames, files or descriptors can produce a pass: exiting early, patching builtins or
`AssertionError`, returning an object whose `__eq__` always says yes, or writing to every descriptor
only makes the judge's call fail. The judge makes itself non-dumpable (`PR_SET_DUMPABLE` 0) before
the solution starts, and the parent does the same while a solution runs, so the solution cannot
ptrace either of them or open their `/proc/<pid>/mem` or `/fd`; where unprivileged user namespaces
exist, the solution also runs in its own PID namespace (it cannot name, signal or trace any process
outside; everything it started dies with it) and network namespace (no interface up).

What the kernel enforces on top: a fresh process group killed with SIGKILL after the run,
CPU-time / address-space / file-size limits, a fresh temporary working directory and an emptied
environment. A Python-level guard (human-eval's `reliability_guard` idea, best-effort only) makes
writes outside the temporary directory, sockets and process creation raise. A plain program
(`run_program(str)`) has no separate judge: it passes when it exits 0, which the program itself
controls. This is not a full security sandbox (the solution can read your files): see
docs/evaluation.md, and run untrusted code in a container or VM.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import InstructkitError
from .exec_harness import JUDGE, JUDGE_ERROR, PLAIN, SOLUTION

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_PR_GET_DUMPABLE, _PR_SET_DUMPABLE, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS = 3, 4, 24, 38
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_CAPABILITY_VERSION_3 = 0x20080522
_OUTPUT_TAIL = 4096


@dataclass(frozen=True)
class ExecLimits:
    """Per-run limits. `timeout` is wall-clock seconds; the CPU limit is derived from it."""

    timeout: float = 10.0
    memory_mb: int = 2048
    file_size_mb: int = 16


@dataclass(frozen=True)
class Check:
    """An untrusted solution and the trusted code that judges it (see the module docstring).

    `solution` runs in the solution process and must define `entry_point`; `setup` (the prompt:
    helpers the test uses) and `test` (defines `check(candidate)`) run in the judge process."""

    solution: str
    setup: str
    test: str
    entry_point: str


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one run: status is "passed", "failed", "timeout" or "error" (the judge could not
    judge); `returncode` is the untrusted process's; output is the last 4 KiB of each process."""

    status: str
    returncode: int | None
    output: str
    network_isolated: bool

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> None:
    if hasattr(os, "unshare"):  # Python ≥ 3.12
        os.unshare(flags)
    elif _libc().unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _unshare_namespaces() -> None:
    """Move the calling process into new user + network namespaces (only `lo`, down); its first
    child will be PID 1 of a new PID namespace."""
    _unshare(_CLONE_NEWUSER | _CLONE_NEWNET | _CLONE_NEWPID)


@functools.cache
def network_isolation_available() -> bool:
    """Whether this kernel lets us give the child private user, network and PID namespaces."""
    if not sys.platform.startswith("linux"):
        return False
    _libc()  # load libc before fork: the child only calls into it
    try:
        subprocess.run(["true"], preexec_fn=_unshare_namespaces, check=True, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _drop_privileges() -> None:
    """No capabilities now or after exec (even as root: no CAP_SYS_PTRACE, CAP_DAC_OVERRIDE, ...),
    and no_new_privs, so set-user-ID programs and file capabilities cannot give them back."""
    libc = _libc()
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for cap in range(64):  # needs CAP_SETPCAP; an unprivileged process has nothing to drop anyway
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    if libc.capset(header, (ctypes.c_uint32 * 6)()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def _child_setup(limits: ExecLimits, isolate: bool, untrusted: bool = True) -> None:
    """Runs in the forked child before exec: kernel limits, then (untrusted side) the namespaces
    and dropping every capability."""
    import resource

    cpu = math.ceil(limits.timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = limits.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = limits.file_size_mb << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if isolate:
        _unshare_namespaces()
    if untrusted and sys.platform.startswith("linux"):
        _drop_privileges()


def _kill_group(pgid: int) -> None:
    """SIGKILL every process left in the run's process group (the group outlives its leader)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


_protect_lock = threading.Lock()
_protect_count = 0
_protect_restore = 1


@contextlib.contextmanager
def _parent_protected() -> Iterator[None]:
    """While untrusted code runs, this process is non-dumpable: same-user processes cannot ptrace
    it or open its /proc/<pid>/mem, /fd or /environ (restored when the last run ends)."""
    global _protect_count, _protect_restore
    if not sys.platform.startswith("linux"):
        yield
        return
    with _protect_lock:
        if _protect_count == 0:
            _protect_restore = _libc().prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0)
            _libc().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
        _protect_count += 1
    try:
        yield
    finally:
        with _protect_lock:
            _protect_count -= 1
            if _protect_count == 0 and _protect_restore == 1:
                _libc().prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)


def _env(work: str) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _spawn(
    harness: str,
    args: list[str],
    work: str,
    out: BinaryIO,
    fds: tuple[int, ...],
    limits: ExecLimits,
    isolate: bool,
    untrusted: bool = True,
) -> subprocess.Popen:
    """Start `harness` in its own session with the limits; it inherits only `fds` (and 0, 1, 2)."""
    return subprocess.Popen(
        [sys.executable, "-I", "-u", "-c", harness, *args],
        cwd=work,
        env=_env(work),
        stdin=subprocess.PIPE,
        stdout=out,
        stderr=subprocess.STDOUT,
        pass_fds=fds,
        start_new_session=True,
        preexec_fn=functools.partial(_child_setup, limits, isolate, untrusted),
    )


def _feed(proc: subprocess.Popen, data: bytes) -> None:
    """Write a harness's input and close its stdin (a child that died early is not an error here)."""
    with contextlib.suppress(BrokenPipeError, OSError):
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.close()


def run_program(program: str | Check, limits: ExecLimits | None = None) -> ExecResult:
    """Run a `Check` (solution judged by its tests in a second process) or a plain program (passes
    when it exits 0) in fresh limited process groups; see the module docstring."""
    if sys.platform == "win32":
        raise InstructkitError("code execution needs a POSIX system (process groups and rlimits)")
    limits = limits or ExecLimits()
    if isinstance(program, Check):
        return _run_check(program, limits)
    isolate = network_isolation_available()
    with tempfile.TemporaryDirectory(prefix="ik-exec-") as work, tempfile.TemporaryFile() as out:
        with _parent_protected():
            proc = _spawn(PLAIN, ["1" if isolate else ""], work, out, (), limits, isolate)
            _feed(proc, program.encode())
            timed_out = _wait(proc, time.monotonic() + limits.timeout)
            _kill_group(proc.pid)
            proc.wait()
        output = _tail(out)
    status = "timeout" if timed_out else "passed" if proc.returncode == 0 else "failed"
    return ExecResult(status, None if timed_out else proc.returncode, output, isolate)


def _wait(proc: subprocess.Popen, deadline: float) -> bool:
    """Wait for `proc` until `deadline`; True if it timed out."""
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return True
    return False


def _run_check(check: Check, limits: ExecLimits) -> ExecResult:
    """The two-process judge: the verdict is the judge's exit status, read here with waitpid."""
    isolate = network_isolation_available()
    deadline = time.monotonic() + limits.timeout
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    ready_r, ready_w = os.pipe()
    judge = solution = None
    with contextlib.ExitStack() as stack:
        judge_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="ik-judge-"))
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="ik-exec-"))
        judge_out = stack.enter_context(tempfile.TemporaryFile())
        out = stack.enter_context(tempfile.TemporaryFile())
        stack.enter_context(_parent_protected())
        try:
            judge_args = [str(req_w), str(resp_r), str(ready_w)]
            judge = _spawn(
                JUDGE, judge_args, judge_dir, judge_out, (req_w, resp_r, ready_w), limits, False, False
            )
            os.close(ready_w)
            ready_w = -1
            judge_ready = _read_ready(ready_r, deadline)  # non-dumpable before the solution exists
            if judge_ready:
                args = [str(req_r), str(resp_w), check.entry_point, "1" if isolate else ""]
                solution = _spawn(SOLUTION, args, work, out, (req_r, resp_w), limits, isolate)
                _close(req_r, req_w, resp_r, resp_w)
                req_r = req_w = resp_r = resp_w = -1
                _feed(solution, check.solution.encode())
                spec = {"setup": check.setup, "test": check.test, "entry_point": check.entry_point}
                _feed(judge, json.dumps(spec).encode())
            timed_out = _wait(judge, deadline)
        finally:
            _close(req_r, req_w, resp_r, resp_w, ready_r, ready_w)
            for proc in (judge, solution):
                if proc is not None:
                    _kill_group(proc.pid)
                    proc.wait()
        output = _tail(out) + ("\n--- judge ---\n" + _tail(judge_out) if judge.returncode != 0 else "")
    code = None if solution is None or timed_out else solution.returncode
    if timed_out:
        return ExecResult("timeout", None, output, isolate)
    if not judge_ready or judge.returncode == JUDGE_ERROR:
        return ExecResult("error", code, output, isolate)
    return ExecResult("passed" if judge.returncode == 0 else "failed", code, output, isolate)


def _read_ready(fd: int, deadline: float) -> bool:
    """Wait for the judge's ready byte (it is non-dumpable by then)."""
    import select

    ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    return bool(ready) and os.read(fd, 1) == b"r"


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _tail(handle: BinaryIO) -> str:
    """The last few KiB a run wrote (it may write up to the file-size limit)."""
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - _OUTPUT_TAIL))
    return handle.read().decode("utf-8", "replace")


@functools.cache
def _self_test() -> None:
    """Fail loudly, once, if the sandbox cannot run even a trivial check (else every sample would
    silently count as a failure)."""
    check = Check("def f(x):\n    return x\n", "", "def check(c):\n    assert c(1) == 1\n", "f")
    for program in ("assert True\n", check):
        result = run_program(program, ExecLimits(timeout=30.0))
        if not result.passed:
            raise InstructkitError(
                f"code execution sandbox cannot run a trivial program ({result.status}, "
                f"exit {result.returncode}): {result.output[-500:]}"
            )


def check_program(program: str | Check, timeout: float = 10.0, allow: bool = False) -> bool:
    """True when the judge's `check(candidate)` returned within `timeout` seconds (for a `Check`),
    or a plain program exited 0; a judge that cannot judge (broken test) raises."""
    if not allow:
        raise InstructkitError(
            "running model-generated code is off; pass --allow-code-execution to enable it"
        )
    _self_test()
    result = run_program(program, ExecLimits(timeout=timeout))
    if result.status == "error":
        raise InstructkitError(
            f"the HumanEval judge could not run this problem's test: {result.output[-500:]}"
        )
    return result.passed


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> Check:
    """The HumanEval check: prompt + completion is the solution; the prompt and test judge it."""
    return Check(f"{prompt}{completion}\n", prompt, test, entry_point)
