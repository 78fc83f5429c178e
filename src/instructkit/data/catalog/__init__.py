"""The task catalog shipped with instructkit: YAML task definitions plus readers for hub schemas.

`BUILTIN_DIR` holds `procedural/` (no download), `shared/` (the offline data in ../shared/data)
and `hub/` (collections loaded from the Hugging Face hub when it is reachable).
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_DIR = Path(__file__).resolve().parent
