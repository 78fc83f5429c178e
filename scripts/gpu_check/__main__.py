"""`python scripts/gpu_check <command>`: run the check as a package whichever way it is started."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # started as a folder: import it as the package `gpu_check` instead
    here = Path(__file__).resolve().parent
    # this folder on sys.path would let sections/ names shadow real modules; its parent holds the package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))

from gpu_check.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
