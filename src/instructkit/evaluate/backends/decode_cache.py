"""KV caches for batched decoding: prompts prefilled in groups of similar length, joined into one
left-padded cache whose keys and values grow in place.

Two costs of the usual batched generation (one left-padded prefill, a cache that grows by `torch.cat`)
are not needed for its result. Padding a batch of prompts to the longest feeds every pad token through
every layer: lm-eval's gsm8k 5-shot prompts differ by up to 1.8x in length, so a fifth of the prefill is
padding. And `torch.cat` copies the whole cache at every decoding step: over 1,000-token prompts that
copy costs as much as the step's matrix products on a CPU. Here prompts are prefilled in groups chosen
to keep padding small (`prefill_groups`), their caches are copied once into a buffer with room for the
generated tokens (`join_left_padded`), and each step writes its keys and values into that buffer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

# A forward pass costs about this many tokens' work beyond its tokens (call overhead, matrix products
# too short to run at full speed): a group of prompts is split only where that saves more padding.
PREFILL_OVERHEAD_TOKENS = 8
# The masked CPU attention kernel ran at about half the matrix products' speed (SmolLM2-135M: 51 against
# 87 GFLOP/s), so a pair of attention costs twice its FLOPs in tokens' worth of linear work.
MASKED_ATTENTION_SLOWDOWN = 2


def prefill_groups(
    lengths: Sequence[int],
    overhead: int | None = None,
    pair_cost: float = 0.0,
    always_masked: bool = False,
) -> list[list[int]]:
    """Split prompts (`lengths`, longest first) into consecutive groups, each prefilled as one padded
    batch, at the least cost (exact, by dynamic programming). A group costs its padded tokens, plus
    `overhead` (default PREFILL_OVERHEAD_TOKENS), plus, when it needs an attention mask (more than one
    row, or `always_masked`: a cached prefix), the upper triangle a causal kernel would have skipped:
    width²/2 pairs per row at `pair_cost` tokens each (`attention_pair_cost`)."""
    overhead = PREFILL_OVERHEAD_TOKENS if overhead is None else overhead
    n = len(lengths)
    if any(a < b for a, b in zip(lengths, lengths[1:])):
        raise ValueError("prefill_groups: lengths must be sorted longest first")

    def cost(i: int, j: int) -> float:
        rows, width = j - i, lengths[i]
        masked = rows > 1 or always_masked
        return rows * width + overhead + (rows * width * width / 2 * pair_cost if masked else 0.0)

    best = [0.0] * (n + 1)  # best[j]: cheapest cost of the first j prompts
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        best[j], cut[j] = min((best[i] + cost(i, j), i) for i in range(j))
    groups: list[list[int]] = []
    j = n
    while j:
        groups.append(list(range(cut[j], j)))
        j = cut[j]
    return groups[::-1]


def attention_pair_cost(model: Any) -> float:
    """One query-key pair of attention in every layer, in tokens' worth of the linear layers' work:
    4·layers·heads·head_dim FLOPs against 2 per weight outside the embeddings, times
    MASKED_ATTENTION_SLOWDOWN. 0 when the config does not say its shape."""
    config = model.config
    heads = getattr(config, "num_attention_heads", None)
    layers = getattr(config, "num_hidden_layers", None)
    hidden = getattr(config, "hidden_size", None)
    if not (heads and layers and hidden):
        return 0.0
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    embeddings = {
        id(m.weight) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None
    }
    linear = sum(p.numel() for p in model.parameters() if id(p) not in embeddings)
    return MASKED_ATTENTION_SLOWDOWN * (4 * layers * heads * head_dim) / (2 * max(linear, 1))


def growable(cache: Any) -> bool:
    """Whether every layer of `cache` is a plain full-attention `DynamicLayer` (sliding-window and other
    layer kinds keep their own layout and are left as they are)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def grows_in_place(cache: Any) -> bool:
    """Whether `cache` was joined here (every layer a `GrowingLayer`): rows can take drafts, whose
    rejected columns stay in the cache under a zero mask."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(isinstance(layer, GrowingLayer) for layer in layers)


def compact(cache: Any, rows: torch.Tensor, columns: torch.Tensor) -> None:
    """Keep `rows` and `columns` of every layer of a joined cache (see `grows_in_place`)."""
    for layer in cache.layers:
        layer.select(rows, columns)


def join_left_padded(
    parts: Sequence[tuple[Any, torch.Tensor]], prefix: int, room: int
) -> tuple[DynamicCache, torch.Tensor]:
    """One cache and attention mask for the rows of every part, in order.

    Each part is (its cache, its mask): `prefix` shared columns, then its rows' left-padded prompts.
    Parts narrower than the widest are padded on the left of their prompt columns (after the prefix), so
    every row's last prompt token sits in the last column. The joined layers keep `room` free columns
    for the tokens decoding will add.
    """
    width = max(mask.shape[1] for _, mask in parts)
    rows = sum(mask.shape[0] for _, mask in parts)
    first = parts[0][1]
    joined_mask = torch.zeros((rows, width), dtype=first.dtype, device=first.device)
    row = 0
    for _, mask in parts:
        joined_mask[row : row + mask.shape[0], :prefix] = mask[:, :prefix]
        joined_mask[row : row + mask.shape[0], prefix + width - mask.shape[1] :] = mask[:, prefix:]
        row += mask.shape[0]
    cache = parts[0][0]
    cache.layers = [
        GrowingLayer.joined([part[0].layers[i] for part in parts], prefix, width, room)
        for i in range(len(cache.layers))
    ]
    return cache, joined_mask


class GrowingLayer(DynamicLayer):
    """A full-attention layer cache kept in a buffer with spare columns: appending writes in place.

    `keys`/`values` are views of the filled columns, as a `DynamicLayer` exposes them; the buffer grows
    (doubling) only if decoding outruns the room it was given.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self.device = keys.device
        self._keys, self._values, self._length = keys, values, length
        self.is_initialized = True
        self._expose()

    @classmethod
    def joined(cls, layers: Sequence[DynamicLayer], prefix: int, width: int, room: int) -> GrowingLayer:
        """Rows of `layers` stacked, each right-aligned to `width` columns after its `prefix` columns."""
        sample = layers[0].keys
        heads, dim = sample.shape[1], sample.shape[3]
        rows = sum(layer.keys.shape[0] for layer in layers)
        shape = (rows, heads, width + room, dim)
        keys = torch.zeros(shape, dtype=sample.dtype, device=sample.device)
        values = torch.zeros(shape, dtype=layers[0].values.dtype, device=sample.device)
        row = 0
        for layer in layers:
            count, own = layer.keys.shape[0], layer.keys.shape[2]
            for buffer, source in ((keys, layer.keys), (values, layer.values)):
                buffer[row : row + count, :, :prefix] = source[:, :, :prefix]
                buffer[row : row + count, :, width - own + prefix : width] = source[:, :, prefix:]
            row += count
        return cls(keys, values, width)

    def _expose(self) -> None:
        self.keys = self._keys[:, :, : self._length]
        self.values = self._values[:, :, : self._length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new columns after the filled ones; return every filled column."""
        end = self._length + key_states.shape[-2]
        if end > self._keys.shape[2]:
            self._grow(end)
        self._keys[:, :, self._length : end] = key_states
        self._values[:, :, self._length : end] = value_states
        self._length = end
        self._expose()
        return self.keys, self.values

    def _grow(self, needed: int) -> None:
        columns = max(needed, 2 * self._keys.shape[2])
        self._keys = self._copy(self.keys, columns)
        self._values = self._copy(self.values, columns)

    @staticmethod
    def _copy(filled: torch.Tensor, columns: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        source = filled if rows is None else filled.index_select(0, rows)
        out = source.new_empty((source.shape[0], source.shape[1], columns, source.shape[3]))
        out[:, :, : source.shape[2]] = source
        return out

    def select(self, rows: torch.Tensor, columns: torch.Tensor) -> None:
        """Keep only `rows` and, of the filled columns, `columns` (in order); the spare room stays."""
        rows, columns = rows.to(self.device), columns.to(self.device)
        spare = self._keys.shape[2] - self._length
        self._keys = self._copy(
            self.keys.index_select(0, rows).index_select(2, columns), len(columns) + spare
        )
        self._values = self._copy(
            self.values.index_select(0, rows).index_select(2, columns), len(columns) + spare
        )
        self._length = len(columns)
        self._expose()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep (and order) the rows `beam_idx`; only filled columns are copied."""
        rows = beam_idx.to(self.device)
        self._keys = self._copy(self.keys, self._keys.shape[2], rows)
        self._values = self._copy(self.values, self._values.shape[2], rows)
        self._expose()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.reorder_cache(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        rows = torch.arange(self._keys.shape[0], device=self.device).repeat_interleave(repeats)
        self.reorder_cache(rows)

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("GrowingLayer.crop takes a negative count (tokens to remove)")
        self._length = max(0, self._length + tokens_to_remove)
        self._expose()

    def get_seq_length(self) -> int:
        return self._length

    def reset(self) -> None:
        self._length = 0
        self._expose()
