"""`data build --executor ray`: the mixture's rows rendered with Ray Data, written as `build_mixture` writes them.

The plan (which task row lands where, with which template draw) is `plan_mixture`'s and each row is
rendered by the same `_Renderer`, whose choices are keyed by (seed, task, row, occurrence), so the
rows do not depend on which worker renders them; blocks come back in order. The folder (dataset,
stats.json, rejects, decontamination report) is the local executor's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa

from ..data.conversation import CONVERSATION_FEATURES
from ..data.mixture import _Renderer, config_hash, plan_mixture, write_mixture
from ..data.mixture_config import MixtureConfig
from . import init_ray


class _ArrowRender:
    """`_Renderer` on an Arrow batch of plan rows, conversations back as Arrow."""

    def __init__(self, renderer: _Renderer):
        self.renderer = renderer

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = self.renderer(batch.to_pydict())
        return pa.Table.from_pydict(rows, schema=CONVERSATION_FEATURES.arrow_schema)


def build_mixture_ray(
    config: MixtureConfig, out_dir: str | Path, address: str | None = None, num_cpus: int | None = None
) -> dict[str, Any]:
    """Render the mixture on Ray to `out_dir`; the same folder and stats as `build_mixture`."""
    ray = init_ray(address, num_cpus)
    out = Path(out_dir)
    plan = plan_mixture(config)
    table = pa.table(
        {
            "_task": pa.array([p[0] for p in plan.plan], pa.string()),
            "_row": pa.array([p[1] for p in plan.plan], pa.int64()),
            "_occurrence": pa.array([p[2] for p in plan.plan], pa.int64()),
        }
    )
    rendered = ray.data.from_arrow(table).map_batches(
        _ArrowRender(_Renderer(plan.tasks, config)), batch_format="pyarrow", batch_size=256
    )
    parts = [t for t in ray.get(rendered.to_arrow_refs()) if t.num_rows]
    schema = CONVERSATION_FEATURES.arrow_schema
    rows = pa.concat_tables(parts).cast(schema) if parts else schema.empty_table()
    ds = datasets.Dataset(rows, fingerprint=config_hash(config))
    return write_mixture(config, plan, ds, out)
