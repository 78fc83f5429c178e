"""Run a generated program against its unit tests in a separate, time- and memory-limited process.

Model-written code is untrusted: execution is off unless the caller opts in (`allow_code_execution`).
The child runs isolated (`python -I`) in an empty temporary directory with CPU, memory and file limits.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

from ..errors import InstructkitError

_LIMITS = """
import resource
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
resource.setrlimit(resource.RLIMIT_CPU, ({cpu}, {cpu}))
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
"""


def check_program(program: str, timeout: float = 10.0, allow: bool = False) -> bool:
    """True when `program` (solution + tests) exits with status 0 within `timeout` seconds."""
    if not allow:
        raise InstructkitError(
            "running model-generated code is off; pass --allow-code-execution to enable it"
        )
    prelude = _LIMITS.format(cpu=int(timeout) + 1) if sys.platform != "win32" else ""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", prelude + program],
                cwd=tmp,
                timeout=timeout,
                capture_output=True,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The HumanEval check program: prompt + completion, the test code, then check(entry_point)."""
    return f"{prompt}{completion}\n\n{test}\n\ncheck({entry_point})\n"
