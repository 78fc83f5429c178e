"""Run a generated program against its unit tests in a separate, limited, throw-away process.

Model-written code is untrusted: execution is off unless the caller opts in (`allow_code_execution`).
What the kernel enforces: a fresh process group killed with SIGKILL after the run (on time-out and
on normal exit, so stray children die too), CPU-time / address-space / file-size limits, a fresh
temporary working directory, an emptied environment, and, where Linux allows an unprivileged user
namespace, a private network namespace with no interfaces up. What a Python-level guard adds (the
idea of human-eval's `reliability_guard`, best-effort only): `open`/`os` writes outside the
temporary directory, sockets, process creation and signalling raise. A run passes only when the
harness itself writes a per-run random token after the tests returned, so `sys.exit(0)` or
`os._exit(0)` before the asserts is a failure. This is not a security sandbox: see
docs/evaluation.md, and run untrusted code in a container or VM.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import InstructkitError

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_OUTPUT_TAIL = 4096

# Runs in the child under `python -I`: reads "<token>\n<program>" from stdin, installs the guard,
# runs the program, then reports the token on stdout. Kept to the standard library.
_HARNESS = r"""
import builtins, io, os, sys

def _guard(root):
    root = os.path.realpath(root)
    real_open, os_open, realpath = io.open, os.open, os.path.realpath
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path):
        if isinstance(path, int):
            return True
        full = realpath(os.fsdecode(os.fspath(path)))
        return full == root or full.startswith(root + os.sep)

    def check(path):
        if not inside(path):
            raise PermissionError(f"write outside the sandbox directory refused: {path!r}")

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            check(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & write_flags and (kwargs.get("dir_fd") is not None or not inside(path)):
            raise PermissionError(f"write outside the sandbox directory refused: {path!r}")
        return os_open(path, flags, *args, **kwargs)

    def path_checked(fn):
        def wrapper(*args, **kwargs):
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)):
                    check(arg)
            return fn(*args, **kwargs)
        return wrapper

    def refused(name):
        def stub(*args, **kwargs):
            raise PermissionError(f"{name} is disabled in the sandbox")
        return stub

    builtins.open = io.open = guarded_open
    os.open = guarded_os_open
    for name in ("remove", "unlink", "rmdir", "removedirs", "mkdir", "makedirs", "rename", "renames",
                 "replace", "link", "symlink", "truncate", "chmod", "lchmod", "chown", "lchown",
                 "utime", "mkfifo", "mknod"):
        if hasattr(os, name):
            setattr(os, name, path_checked(getattr(os, name)))
    for name in ("system", "popen", "fork", "forkpty", "kill", "killpg", "setsid", "setpgid",
                 "setpgrp", "setuid", "setgid", "chdir", "fchdir", "chroot",
                 "posix_spawn", "posix_spawnp", "execv", "execve", "execl", "execle", "execlp",
                 "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle"):
        if hasattr(os, name):
            setattr(os, name, refused("os." + name))
    import socket, subprocess
    subprocess.Popen = refused("subprocess.Popen")
    for name in ("socket", "SocketType", "create_connection", "create_server", "socketpair",
                 "fromfd", "getaddrinfo", "gethostbyname"):
        setattr(socket, name, refused("socket." + name))
    for name in ("ctypes", "_ctypes", "resource", "_posixsubprocess", "_socket"):
        sys.modules[name] = None

def _main():
    token, _, source = sys.stdin.buffer.read().decode("utf-8").partition("\n")
    sys.stdin = io.StringIO("")
    code = compile(source, "<program>", "exec")
    write, flush = os.write, sys.stdout.flush
    _guard(os.getcwd())
    exec(code, {"__name__": "__main__", "__builtins__": builtins})
    flush()
    write(1, ("\n" + token + "\n").encode())

_main()
"""


@dataclass(frozen=True)
class ExecLimits:
    """Per-run limits. `timeout` is wall-clock seconds; the CPU limit is derived from it."""

    timeout: float = 10.0
    memory_mb: int = 2048
    file_size_mb: int = 16


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one run: status is "passed", "failed" or "timeout"; output is the last 4 KiB."""

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


def _unshare_network() -> None:
    """Move the calling process into new user + network namespaces (only `lo`, down)."""
    flags = _CLONE_NEWUSER | _CLONE_NEWNET
    if hasattr(os, "unshare"):  # Python ≥ 3.12
        os.unshare(flags)
    elif _libc().unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@functools.cache
def network_isolation_available() -> bool:
    """Whether this kernel lets us give the child a private, empty network namespace."""
    if not sys.platform.startswith("linux"):
        return False
    _libc()  # load libc before fork: the child only calls into it
    try:
        subprocess.run(["true"], preexec_fn=_unshare_network, check=True, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _child_setup(limits: ExecLimits, isolate_network: bool) -> None:
    """Runs in the forked child before exec: kernel limits, then the private network namespace."""
    import resource

    cpu = math.ceil(limits.timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = limits.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = limits.file_size_mb << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if isolate_network:
        _unshare_network()


def _kill_group(pgid: int) -> None:
    """SIGKILL every process left in the run's process group (the group outlives its leader)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_program(program: str, limits: ExecLimits | None = None) -> ExecResult:
    """Run `program` (solution + tests) in a fresh limited process group; see the module docstring."""
    if sys.platform == "win32":
        raise InstructkitError("code execution needs a POSIX system (process groups and rlimits)")
    limits = limits or ExecLimits()
    token = secrets.token_hex(16)
    isolate = network_isolation_available()
    with tempfile.TemporaryDirectory(prefix="ik-exec-") as work, tempfile.TemporaryFile() as out:
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _HARNESS],
            cwd=work,
            env=env,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=functools.partial(_child_setup, limits, isolate),
        )
        timed_out = False
        try:
            proc.communicate(f"{token}\n{program}".encode(), timeout=limits.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc.pid)
            proc.wait()
        output = _tail(out)
    lines = output.rstrip("\n").split("\n")
    passed = not timed_out and proc.returncode == 0 and lines[-1] == token
    status = "timeout" if timed_out else "passed" if passed else "failed"
    shown = "\n".join(lines[:-1]) if passed else output
    return ExecResult(status, None if timed_out else proc.returncode, shown, isolate)


def _tail(handle: BinaryIO) -> str:
    """The last few KiB a run wrote (it may write up to the file-size limit)."""
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - _OUTPUT_TAIL))
    return handle.read().decode("utf-8", "replace")


@functools.cache
def _self_test() -> None:
    """Fail loudly, once, if the sandbox cannot run even a trivial program (else every sample
    would silently count as a failure)."""
    result = run_program("assert True\n", ExecLimits(timeout=30.0))
    if not result.passed:
        raise InstructkitError(
            f"code execution sandbox cannot run a trivial program ({result.status}, "
            f"exit {result.returncode}): {result.output[-500:]}"
        )


def check_program(program: str, timeout: float = 10.0, allow: bool = False) -> bool:
    """True when `program` (solution + tests) ran to its end within `timeout` seconds."""
    if not allow:
        raise InstructkitError(
            "running model-generated code is off; pass --allow-code-execution to enable it"
        )
    _self_test()
    return run_program(program, ExecLimits(timeout=timeout)).passed


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The HumanEval check program: prompt + completion, the test code, then check(entry_point)."""
    return f"{prompt}{completion}\n\n{test}\n\ncheck({entry_point})\n"
