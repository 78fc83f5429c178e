"""The programs the code-execution processes run (`python -I -u -c`), kept to the standard library.

`SOLUTION` (untrusted side) installs the best-effort guard, runs the solution and answers calls;
`JUDGE` (trusted side) runs the problem's prompt and test with a stand-in `candidate` and exits 0
only when `check(candidate)` returned; `PLAIN` runs a program under the guard. Values cross between
them as tagged JSON (`CODEC`), decoded into exact built-in types. See `code_exec` for the model.
"""

JUDGE_ERROR = 3  # the judge's exit status when it cannot judge (bad setup, an argument it cannot send)

# Installed in the solution process before any untrusted code runs (best-effort: see the docstring).
GUARD = r"""
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

def _enter_pid_namespace():
    # The parent unshared CLONE_NEWPID: our first child is PID 1 there; we only wait for it.
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""

# Tagged JSON for plain values; the judge's decoder builds only exact built-in types.
CODEC = r"""
import json, math

def _enc(v, depth=0):
    if depth > 100:
        raise ValueError("value nested too deeply")
    t, d = type(v), depth + 1
    if v is None: return ["n"]
    if t is bool: return ["b", v]
    if t is int: return ["i", format(v, "x")]
    if t is float: return ["f", v.hex()]
    if t is complex: return ["c", v.real.hex(), v.imag.hex()]
    if t is str: return ["s", v]
    if t is bytes: return ["y", v.hex()]
    if t is list: return ["l", [_enc(x, d) for x in v]]
    if t is tuple: return ["t", [_enc(x, d) for x in v]]
    if t is set: return ["S", [_enc(x, d) for x in v]]
    if t is frozenset: return ["F", [_enc(x, d) for x in v]]
    if t is dict: return ["d", [[_enc(k, d), _enc(x, d)] for k, x in v.items()]]
    raise TypeError(f"cannot pass a {t.__name__} between processes (plain data only)")

def _dec(v, depth=0):
    if depth > 100 or type(v) is not list or not v or type(v[0]) is not str:
        raise ValueError("malformed value")
    tag, d = v[0], depth + 1
    def items():
        if len(v) != 2 or type(v[1]) is not list:
            raise ValueError("malformed value")
        return [_dec(x, d) for x in v[1]]
    if tag == "n" and len(v) == 1: return None
    if tag == "b" and len(v) == 2 and type(v[1]) is bool: return bool(v[1])
    if tag == "i" and len(v) == 2 and type(v[1]) is str: return int(v[1], 16)
    if tag == "f" and len(v) == 2 and type(v[1]) is str: return float.fromhex(v[1])
    if tag == "c" and len(v) == 3 and type(v[1]) is type(v[2]) is str:
        return complex(float.fromhex(v[1]), float.fromhex(v[2]))
    if tag == "s" and len(v) == 2 and type(v[1]) is str: return str(v[1])
    if tag == "y" and len(v) == 2 and type(v[1]) is str: return bytes.fromhex(v[1])
    if tag == "l": return items()
    if tag == "t": return tuple(items())
    if tag == "S": return set(items())
    if tag == "F": return frozenset(items())
    if tag == "d" and len(v) == 2 and type(v[1]) is list:
        if any(type(p) is not list or len(p) != 2 for p in v[1]):
            raise ValueError("malformed dict")
        return {_dec(k, d): _dec(x, d) for k, x in v[1]}
    raise ValueError("malformed value")
"""

# Solution process: argv = [req_fd, resp_fd, entry_point, "pidns"|""]; stdin = the solution source.
SOLUTION = (
    GUARD
    + CODEC
    + r"""
def _main():
    req_fd, resp_fd, entry, pidns = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    source = sys.stdin.buffer.read().decode("utf-8")
    sys.stdin = io.StringIO("")
    if pidns:
        _enter_pid_namespace()
    requests, responses = os.fdopen(req_fd, "rb"), os.fdopen(resp_fd, "wb")
    code = compile(source, "<program>", "exec")
    _guard(os.getcwd())
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    exec(code, namespace)
    sys.stdout.flush()
    function = namespace[entry]
    for line in requests:
        _, args, kwargs = json.loads(line)
        try:
            result = function(*[_dec(a) for a in args], **{k: _dec(x) for k, x in kwargs.items()})
            reply = ["ok", _enc(result)]
        except Exception as exc:
            reply = ["raise", type(exc).__name__, str(exc)[:2000]]
        responses.write(json.dumps(reply).encode() + b"\n")
        responses.flush()

_main()
"""
)

# Judge process (trusted code only): argv = [req_fd, resp_fd, ready_fd]; stdin = JSON
# {"setup", "test", "entry_point"}. Exit 0 means check(candidate) returned; nothing else does.
JUDGE = (
    CODEC
    + r"""
import builtins, ctypes, os, sys

def _main():
    if sys.platform.startswith("linux") and ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) != 0:
        os._exit(3)  # PR_SET_DUMPABLE 0 failed: the solution could trace us
    req_fd, resp_fd, ready_fd = map(int, sys.argv[1:4])
    os.write(ready_fd, b"r")
    os.close(ready_fd)
    spec = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    requests, responses = os.fdopen(req_fd, "wb"), os.fdopen(resp_fd, "rb")

    def candidate(*args, **kwargs):
        try:
            message = ["call", [_enc(a) for a in args], {k: _enc(v) for k, v in kwargs.items()}]
        except (TypeError, ValueError) as exc:
            print(f"judge error: the test passes a value that cannot be sent: {exc}", flush=True)
            os._exit(3)
        requests.write(json.dumps(message).encode() + b"\n")
        requests.flush()
        line = responses.readline()
        if not line:
            raise ConnectionError("the solution process ended before answering")
        reply = json.loads(line)
        if type(reply) is list and len(reply) == 2 and reply[0] == "ok":
            return _dec(reply[1])
        if type(reply) is list and len(reply) == 3 and reply[0] == "raise":
            kind = getattr(builtins, str(reply[1]), None)
            if isinstance(kind, type) and issubclass(kind, Exception):
                raise kind(str(reply[2]))
            raise RuntimeError(f"{reply[1]}: {reply[2]}")
        raise ValueError("malformed reply from the solution process")

    namespace = {"__name__": "__judge__", "__builtins__": builtins}
    try:
        exec(compile(spec["setup"], "<prompt>", "exec"), namespace)
        exec(compile(spec["test"], "<test>", "exec"), namespace)
        check = namespace["check"]
    except BaseException as exc:
        print(f"judge error: the prompt or test does not define check(): {exc!r}", flush=True)
        os._exit(3)
    try:
        check(candidate)
    except BaseException:
        import traceback
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)

_main()
"""
)

# A plain program: runs under the guard; its exit status is its result.
PLAIN = (
    GUARD
    + r"""
def _main():
    pidns = sys.argv[1]
    source = sys.stdin.buffer.read().decode("utf-8")
    sys.stdin = io.StringIO("")
    if pidns:
        _enter_pid_namespace()
    code = compile(source, "<program>", "exec")
    _guard(os.getcwd())
    exec(code, {"__name__": "__main__", "__builtins__": builtins})

_main()
"""
)
