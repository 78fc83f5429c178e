"""`data prepare --executor ray`: tokenize + mask on Ray Data, best-fit-decreasing packing per block.

Reading, rejects, counting and writing are `prepare`'s own; only its two heavy steps move:
tokenization runs the same batch function (`_Tokenize`: chat template, exact masks, length
policy) with `map_batches` over Arrow blocks, in input order; packing runs `pack_table` on blocks
of at least `block_size` consecutive examples in parallel tasks, so its cost no longer grows with
the whole dataset on one node. Per-block packing may need a few more packs than global packing
(benchmarks/bench_synth_ray.py measures it); when everything fits one block, the packs, and so the
output directory, are the local executor's.
"""

from __future__ import annotations

from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from ..data.packing import PackStats, pack_table
from ..data.prepare import _Tokenize, prepare
from ..data.prepare_config import PrepareConfig
from ..data.tokenize import ChatTokenizer
from . import init_ray

PACK_BLOCK = 100_000  # examples per packing block (at least; the remainder joins the last block)
TOKENIZED_SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("source", pa.string()),
        ("row_id", pa.int64()),
    ]
)


class _ArrowTokenize:
    """`_Tokenize` on an Arrow batch: the same Python rows `datasets.map` hands it, Arrow back.

    Pickled without the `ChatTokenizer` (its compiled Jinja template does not pickle): each Ray
    worker rebuilds it from the tokenizer and the resolved template source, as `prepare` built it.
    """

    def __init__(self, chat_tok: ChatTokenizer, cfg: PrepareConfig, text: bool):
        self.recipe = (chat_tok.tokenizer, chat_tok.template, chat_tok.control_tokens)
        self.cfg, self.text = cfg, text
        self.tokenize: _Tokenize | None = _Tokenize(chat_tok, cfg, text)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "tokenize": None}

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.tokenize is None:
            self.tokenize = _Tokenize(ChatTokenizer(*self.recipe), self.cfg, self.text)
        return pa.Table.from_pydict(self.tokenize(batch.to_pydict()), schema=TOKENIZED_SCHEMA)


def ray_tokenize(ray: Any, batch_size: int = 256):
    """A `tokenize` step for `prepare` that maps `_Tokenize` over the rows with Ray Data."""

    def tokenize(ds: datasets.Dataset, chat_tok, cfg: PrepareConfig, text: bool) -> datasets.Dataset:
        rows = ray.data.from_arrow(ds.data.table.combine_chunks())
        mapped = rows.map_batches(
            _ArrowTokenize(chat_tok, cfg, text), batch_format="pyarrow", batch_size=batch_size
        )
        tables = [t for t in ray.get(mapped.to_arrow_refs()) if t.num_rows]
        table = pa.concat_tables(tables) if tables else TOKENIZED_SCHEMA.empty_table()
        return datasets.Dataset(table.cast(TOKENIZED_SCHEMA))

    return tokenize


def block_bounds(n: int, block_size: int) -> list[tuple[int, int]]:
    """[start, stop) of consecutive blocks of `block_size` rows; the remainder joins the last block."""
    starts = list(range(0, max(n - block_size, 0) + 1, block_size)) if n > block_size else [0]
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def _pack_block(table: pa.Table, capacity: int, start: int) -> tuple[pa.Table, PackStats]:
    """`pack_table` on one block; `example_ids` shifted so they stay row indices of the whole input."""
    packed, stats = pack_table(table, capacity)
    if start:
        ids = packed.column("example_ids").combine_chunks()
        shifted = pa.ListArray.from_arrays(ids.offsets, pc.add(ids.flatten(), start))
        packed = packed.set_column(packed.schema.get_field_index("example_ids"), "example_ids", shifted)
    return packed, stats


def ray_pack(ray: Any, block_size: int = PACK_BLOCK):
    """A `pack` step for `prepare`: best-fit decreasing per block, blocks packed in parallel Ray tasks."""
    remote_pack = ray.remote(_pack_block)

    def pack(table: pa.Table, capacity: int) -> tuple[pa.Table, PackStats]:
        bounds = block_bounds(table.num_rows, block_size)
        if len(bounds) == 1:  # one block: global packing, exactly the local executor's
            return pack_table(table, capacity)
        results = ray.get([remote_pack.remote(table.slice(s, e - s), capacity, s) for s, e in bounds])
        tables = [t for t, _ in results]
        if len({t.schema for t in tables}) > 1:  # a block past 2**31 tokens uses large lists
            tables = [t.cast(_large(t.schema)) for t in tables]
        return pa.concat_tables(tables), PackStats(
            examples=sum(s.examples for _, s in results),
            packs=sum(s.packs for _, s in results),
            tokens=sum(s.tokens for _, s in results),
            capacity=capacity,
        )

    return pack


def _large(schema: pa.Schema) -> pa.Schema:
    return pa.schema(
        [
            pa.field(f.name, pa.large_list(f.type.value_type))
            if f.name in ("input_ids", "labels", "position_ids")
            else f
            for f in schema
        ]
    )


def prepare_ray(
    cfg: PrepareConfig,
    address: str | None = None,
    num_cpus: int | None = None,
    block_size: int = PACK_BLOCK,
    progress: bool = True,
) -> dict[str, Any]:
    """`prepare` with tokenization and packing on Ray; the same output directory format."""
    ray = init_ray(address, num_cpus)
    return prepare(cfg, progress, tokenize=ray_tokenize(ray), pack=ray_pack(ray, block_size))
