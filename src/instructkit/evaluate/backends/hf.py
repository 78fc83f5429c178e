"""Hugging Face transformers backend (CPU or GPU): token-trie loglikelihoods and shared-prefix decoding.

Loglikelihood: the tokens every request starts with (a task's few-shot prefix) run once and their KV
cache serves every row. The rest becomes one token trie per context (context once, continuations
branching where they differ, see prefix_tree.py), tries are packed into rows with an ancestor-only 4D
mask, and logits are computed only where a continuation token is scored. Tokenisation follows
lm-evaluation-harness (`base.encode_pair`). Models whose attention cannot take a 4D mask (flash
attention, sliding windows) fall back to one right-padded row per request, as lm-eval runs them.

Generation: the prompts' shared prefix is prefilled once; each batch copies its KV cache, prefills the
left-padded remainders, then decodes. A row leaves the batch as soon as it emits EOS, a stop sequence
or its token limit, so the others never wait for it; `n` samples copy their prompt's cache.

Batch size and padding change the shapes of the matrix products, hence the order of float reductions:
by default log-likelihoods differ across batch sizes by float32 rounding (docs/evaluation.md states
the measured bound; predictions do not change). With `deterministic=True` every request runs with
shapes that depend on that request alone (its context as one row, then its continuation on that
context's KV cache; each generation request as its own batch), so results are bit-identical for any
batch size, request order or resumed run on the same device, dtype and library versions.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ...fingerprint import text_digest
from ..prompting import stop_token_ids
from ..requests import GenerationRequest, Loglikelihood, LoglikelihoodRequest, Sample
from .base import Backend, cut_at_stop, encode_pair, encode_text
from .model_identity import source_digest, state_dict_digest, tokenizer_digest
from .prefix_tree import PackedBatch, Trie, batch_inputs, build_tries, common_prefix_length, pack

# A prefix shared by every request of a call is run once only when it is at least this long: shorter
# ones (PIQA's "Question:") cost more in cache copies than they save.
MIN_SHARED_PREFIX = 32
# Loglikelihood rows grow to the longest trie up to this many times `row_tokens` (attention in a row is
# quadratic); a row filled to less than MIN_ROW_FILL of its batch's widest row starts the next batch.
ROW_GROWTH = 4
MIN_ROW_FILL = 0.75


class HFBackend(Backend):
    """A transformers causal LM and its tokenizer.

    `batch_size` bounds rows per forward pass; a loglikelihood row packs tries up to `row_tokens`
    tokens (attention inside a row is quadratic, so rows stay short and batches carry the width).
    `deterministic=True` trades batching for bit-identical results whatever the batch size.
    `source` (set by from_pretrained) is the folder or hub id the weights came from: the fingerprint then
    digests its files (memoized) instead of the in-memory weights. `warnings`: what loading found
    that the results must carry (e.g. an adapter allowed onto another base).
    """

    accepts_token_ids = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 16,
        max_batch_tokens: int | None = None,
        max_length: int | None = None,
        deterministic: bool = False,
        source: str | None = None,
        row_tokens: int = 128,
        warnings: Sequence[str] = (),
    ):
        self.model, self.tokenizer = model, tokenizer
        self.warnings = list(warnings)
        self.batch_size = max(1, batch_size)
        self.max_batch_tokens = max_batch_tokens
        self.deterministic = deterministic
        self.source = source
        self.row_tokens = max(1, row_tokens)
        self._fingerprint: str | None = None
        self.max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
        self.device = next(model.parameters()).device
        self._cache_kw = _cache_keyword(model)
        self.pad_id = _first_not_none(tokenizer.pad_token_id, tokenizer.eos_token_id, 0)

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        dtype: str = "auto",
        device: str | None = None,
        allow_base_mismatch: bool = False,
        **kwargs: Any,
    ) -> HFBackend:
        """Load model and tokenizer from a local directory or hub id (safetensors, no remote code).

        An adapter folder loads only onto the base it was trained on, unless `allow_base_mismatch`.
        """
        from ...models.adapters import check_adapter_base
        from ...models.loading import load_tokenizer
        from ...progress import log_event

        warnings = check_adapter_base(path, allow_base_mismatch)
        for warning in warnings:
            log_event("eval", f"warning: {warning}")
        torch_dtype = torch.float32 if dtype == "float32" else getattr(torch, dtype, "auto")
        model = cls._load_model(path, torch_dtype).eval()
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), load_tokenizer(path), source=path, warnings=warnings, **kwargs)

    @staticmethod
    def _load_model(path: str, dtype: Any) -> Any:
        """The model `from_pretrained` wraps: a causal LM here (the seq2seq backend loads its own kind)."""
        from ...models.loading import load_causal_lm

        return load_causal_lm(path, dtype=dtype)

    def fingerprint(self) -> str:
        """Identity of everything that decides a result: weights (all of them), adapter, tokenizer, chat
        template, config, dtype, device kind, context limit and mode. Computed once per backend."""
        if self._fingerprint is None:
            weights = (source_digest(self.source) if self.source else None) or state_dict_digest(self.model)
            dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
            mode = "deterministic" if self.deterministic else "batched"
            digest = text_digest(
                weights,
                tokenizer_digest(self.tokenizer),
                self.model.config.to_json_string(use_diff=False),
                str(getattr(self.model.config, "_attn_implementation", None)),
                f"{dtype}:{self.device.type}:{self.max_length}:{mode}",
            )
            name = self.source or getattr(self.model, "name_or_path", "") or type(self.model).__name__
            self._fingerprint = f"hf:{name}:{dtype}:{self.device.type}:{mode}:{digest[:32]}"
        return self._fingerprint

    # ---- tokenisation (lm-eval's conventions, shared with the other backends) ----

    def encode(self, text: str) -> list[int]:
        """Token ids; special tokens as the tokenizer adds them, unless the text already starts with BOS."""
        return encode_text(self.tokenizer, text)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids such that the continuation is whole[len(context):]."""
        return encode_pair(self.tokenizer, context, continuation)

    def _pair(self, req: LoglikelihoodRequest) -> tuple[list[int], list[int]]:
        """Context and continuation ids, the context left-truncated to fit `max_length` like lm-eval."""
        ctx, cont = self.encode_pair(req.context, req.continuation)
        return ctx[-max(1, self.max_length - len(cont)) :], cont

    # ---- loglikelihood ----

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """Score every request (see the module docstring for how shared tokens are run once)."""
        return self.loglikelihood_tokens([self._pair(r) for r in requests])

    @torch.inference_mode()
    def loglikelihood_tokens(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[Loglikelihood]:
        """Score (context ids, continuation ids) pairs exactly as given: the caller tokenised and
        truncated them (lm-eval's `LM` adapter, which follows lm-eval's own truncation)."""
        pairs = [(list(ctx), list(cont)) for ctx, cont in pairs]
        if not pairs:
            return []
        if self.deterministic:
            return self._score_alone(pairs)
        if not self._tree_attention():
            return self._score_rows(pairs)
        return self._score_tries(pairs)

    def _tree_attention(self) -> bool:
        """Whether the model takes a custom 4D mask over full (not sliding-window) attention."""
        config = self.model.config
        if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
            return False
        layer_types = getattr(config, "layer_types", None)
        if layer_types is not None:
            return all(t == "full_attention" for t in layer_types)
        return (
            not getattr(config, "sliding_window", None)
            or getattr(config, "use_sliding_window", True) is False
        )

    def _score_tries(self, pairs: list[tuple[list[int], list[int]]]) -> list[Loglikelihood]:
        prefix, _, batches = self.plan_rows(pairs)
        cache = self._prefix_cache(pairs[0][0][:prefix]) if prefix else None
        sums = torch.zeros(len(pairs), dtype=torch.float64, device=self.device)
        misses = torch.zeros(len(pairs), dtype=torch.long, device=self.device)
        for batch in batches:
            self._score_packed(batch_inputs(batch, self.pad_id), cache, prefix, sums, misses)
        return [
            Loglikelihood(total, miss == 0, len(cont))
            for total, miss, (_, cont) in zip(sums.tolist(), misses.tolist(), pairs)
        ]

    def plan_rows(
        self, pairs: list[tuple[list[int], list[int]]]
    ) -> tuple[int, list[Trie], list[list[list[Trie]]]]:
        """The shared prefix length, the tries below it, and the batches of packed rows they run in.

        Rows hold up to the longest trie's tokens (at least `row_tokens`, at most `ROW_GROWTH` times it),
        so one long trie does not leave every row of its batch mostly padding.
        """
        prefix = _shared_prefix([ctx for ctx, _ in pairs])
        tries = build_tries(pairs, prefix)
        longest = max((len(t.tokens) for t in tries), default=0)
        capacity = min(max(self.row_tokens, longest), ROW_GROWTH * self.row_tokens)
        return prefix, tries, list(self._row_batches(pack(tries, capacity), prefix))

    def _row_batches(self, rows: list[list[Trie]], prefix: int) -> Iterator[list[list[Trie]]]:
        """Consecutive rows (widest first) up to `batch_size` rows and `max_batch_tokens` tokens; a row
        under `MIN_ROW_FILL` of its batch's widest starts a new batch (padding would dominate)."""
        batch: list[list[Trie]] = []
        width = 0
        for row in rows:
            size = sum(len(t.tokens) for t in row)
            tokens = (len(batch) + 1) * (max(width, size) + prefix)
            if batch and (
                len(batch) >= self.batch_size
                or size < MIN_ROW_FILL * width
                or (self.max_batch_tokens is not None and tokens > self.max_batch_tokens)
            ):
                yield batch
                batch, width = [], 0
            batch.append(row)
            width = max(width, size)
        if batch:
            yield batch

    def _score_packed(
        self,
        packed: PackedBatch,
        prefix_cache: Any,
        prefix: int,
        sums: torch.Tensor,
        misses: torch.Tensor,
    ) -> None:
        """One forward over packed tries; adds each score into its request's sum and greedy count."""
        dev = self.device
        ids = torch.from_numpy(packed.ids).to(dev)
        allowed = torch.from_numpy(packed.allowed).to(dev)
        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros((*allowed.shape[:2], prefix + allowed.shape[2]), dtype=dtype, device=dev)
        mask[:, :, prefix:].masked_fill_(~allowed, torch.finfo(dtype).min)
        rows, cols = (
            torch.from_numpy(packed.select_rows).to(dev),
            torch.from_numpy(packed.select_cols).to(dev),
        )
        past = _expand_cache(prefix_cache, ids.shape[0]) if prefix_cache is not None else None
        with _logits_only_at(self.model, rows, cols) as picked:
            out = self.model(
                input_ids=ids,
                attention_mask=mask[:, None],
                position_ids=torch.from_numpy(packed.positions).to(dev),
                **{self._cache_kw: past},
                use_cache=past is not None,
            )
        logits = (out.logits[0] if picked["ran"] else out.logits[rows, cols]).float()
        select = torch.from_numpy(packed.score_select).to(dev)
        target = torch.from_numpy(packed.score_target).to(dev)
        request = torch.from_numpy(packed.score_request).to(dev)
        sums.index_add_(0, request, _target_logprobs(logits, select, target).double())
        misses.index_add_(0, request, (logits.argmax(-1)[select] != target).long())

    def _prefix_cache(self, prefix: list[int]) -> Any:
        """KV cache of the shared prefix (one row), its logits skipped."""
        last = torch.tensor([len(prefix) - 1], device=self.device)
        with _logits_only_at(self.model, torch.tensor([0], device=self.device), last):
            out = self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
        return _cache_of(out)

    def _score_rows(self, pairs: list[tuple[list[int], list[int]]]) -> list[Loglikelihood]:
        """Fallback: one right-padded row per request, no mask (causal attention never sees a pad)."""
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        results: list[Loglikelihood | None] = [None] * len(pairs)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            ids, _, _ = self._right_pad([(pairs[i][0] + pairs[i][1])[:-1] for i in chunk])
            logits = self.model(input_ids=ids, use_cache=False).logits
            for r, i in enumerate(chunk):
                ctx, cont = pairs[i]
                results[i] = _continuation_score(
                    logits[r, len(ctx) - 1 : len(ctx) + len(cont) - 1].float(), cont
                )
        return results  # type: ignore[return-value]

    def _score_alone(self, pairs: list[tuple[list[int], list[int]]]) -> list[Loglikelihood]:
        """Deterministic mode: each context runs as one unpadded row, then each of its continuations
        runs on a copy of its KV cache, so every shape depends on one request only.

        A copy rather than `crop`: sliding-window caches forget context tokens and cannot be cropped back.
        """
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for i, (ctx, cont) in enumerate(pairs):
            groups.setdefault(tuple(ctx), []).append((i, cont))
        results: list[Loglikelihood | None] = [None] * len(pairs)
        for ctx, members in groups.items():
            out = self.model(input_ids=torch.tensor([ctx], device=self.device), use_cache=True)
            last, cache = out.logits[0, -1:].float(), _cache_of(out)
            for n, (i, cont) in enumerate(members):
                logits = [last]
                if len(cont) > 1:
                    own = cache if n == len(members) - 1 else copy.deepcopy(cache)
                    tail_ids = torch.tensor([cont[:-1]], device=self.device)
                    tail = self.model(input_ids=tail_ids, **{self._cache_kw: own}, use_cache=True)
                    logits.append(tail.logits[0].float())
                results[i] = _continuation_score(torch.cat(logits), cont)
        return results  # type: ignore[return-value]

    def _right_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        lens = [len(s) for s in seqs]
        width = max(max(lens), 1)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device), lens

    # ---- generation ----

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        """Decode every request; batches hold up to `batch_size` sample rows, longest prompts first."""
        prompts = [self._prompt(r) for r in requests]
        results: list[list[Sample]] = [[] for _ in requests]
        if self.deterministic:  # each request alone: its n rows share one unpadded prompt
            for i, req in enumerate(requests):
                self._generate_batch([req], [prompts[i]], results, [i], 0, None)
            return results
        prefix = _shared_prefix(prompts) if len(prompts) > 1 else 0
        cache = self._prefix_cache(prompts[0][:prefix]) if prefix else None
        for batch in self._generation_batches(requests, prompts):
            reqs, ids = [requests[j] for j in batch], [prompts[j] for j in batch]
            self._generate_batch(reqs, ids, results, batch, prefix, cache)
        return results

    def _generation_batches(
        self, requests: Sequence[GenerationRequest], prompts: list[list[int]]
    ) -> list[list[int]]:
        """Request indices, longest prompts first, in batches of at most `batch_size` sample rows."""
        batches: list[list[int]] = [[]]
        rows = 0
        for i in sorted(range(len(requests)), key=lambda i: (-len(prompts[i]), i)):
            if batches[-1] and rows + requests[i].n > self.batch_size:
                batches.append([])
                rows = 0
            batches[-1].append(i)
            rows += requests[i].n
        return [b for b in batches if b]

    def _prompt(self, req: GenerationRequest) -> list[int]:
        """The request's prompt ids, left-truncated so the generated tokens fit `max_length`."""
        ids = list(req.prompt_ids) if req.prompt_ids else self.encode(req.prompt)
        return ids[-max(1, self.max_length - req.max_new_tokens) :]

    def _generate_batch(
        self,
        reqs: list[GenerationRequest],
        prompts: list[list[int]],
        results: list[list[Sample]],
        slots: list[int],
        prefix: int,
        prefix_cache: Any,
    ) -> None:
        """Prefill the prompts after the shared `prefix`, then decode until every row has finished."""
        ids, mask = self._left_pad([p[prefix:] for p in prompts])
        positions = (prefix + mask.cumsum(-1) - 1).clamp(min=0)
        if prefix:
            mask = torch.cat([torch.ones_like(mask[:, :1]).expand(-1, prefix), mask], dim=1)
        past = _expand_cache(prefix_cache, len(reqs)) if prefix_cache is not None else None
        last = torch.full((len(reqs),), ids.shape[1] - 1, device=self.device)
        with _logits_only_at(self.model, torch.arange(len(reqs), device=self.device), last) as picked:
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                **{self._cache_kw: past},
                use_cache=True,
            )
        logits = out.logits[0] if picked["ran"] else out.logits[:, -1]
        rows, decoder = _Decoder.per_sample(self, reqs)
        cache = _cache_of(out)
        if len(rows) != len(reqs):  # n samples per prompt: copy its cache once per sample
            cache.reorder_cache(torch.tensor(rows, device=self.device))
        live = list(range(len(rows)))
        idx = torch.tensor(rows, device=self.device)
        logits, mask, next_pos = logits.float()[idx], mask[idx], positions[idx, -1] + 1
        while True:
            token = decoder.step(logits, live)
            kept = decoder.drop_finished(live, cache, mask, next_pos, token)
            if kept is None:
                break
            live, (mask, next_pos, token) = kept
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            step = self.model(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=next_pos[:, None],
                **{self._cache_kw: cache},
                use_cache=True,
            )
            logits, next_pos = step.logits[:, -1].float(), next_pos + 1
        for row, sample in enumerate(decoder.samples()):
            results[slots[rows[row]]].append(sample)

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)


class _Decoder:
    """Per-row decoding state: chosen tokens, log-probs, stop checks and per-sample random generators."""

    def __init__(self, backend: HFBackend, reqs: list[GenerationRequest], sample_ids: list[int]):
        self.backend, self.reqs = backend, reqs
        self.tokens: list[list[int]] = [[] for _ in reqs]
        self.logprob = [0.0] * len(reqs)
        self.done = [False] * len(reqs)
        self.rngs = [_generator(r, s) for r, s in zip(reqs, sample_ids)]
        self.eos = stop_token_ids(backend.model, backend.tokenizer)  # EOS + generation_config's eos ids

    @classmethod
    def per_sample(cls, backend: HFBackend, reqs: list[GenerationRequest]) -> tuple[list[int], _Decoder]:
        """One decoding row per sample (`req.n` per request): each row's request index, and the decoder."""
        rows = [b for b, r in enumerate(reqs) for _ in range(r.n)]
        return rows, cls(backend, [reqs[b] for b in rows], [s for r in reqs for s in range(r.n)])

    def drop_finished(
        self, live: list[int], cache: Any, *tensors: torch.Tensor
    ) -> tuple[list[int], tuple[torch.Tensor, ...]] | None:
        """None once every live row has finished; else the rows still live, with finished rows dropped
        from `cache` (in place) and from each per-row tensor."""
        keep = [k for k, r in enumerate(live) if not self.done[r]]
        if not keep:
            return None
        if len(keep) == len(live):
            return live, tensors
        sel = torch.tensor(keep, device=self.backend.device)
        cache.reorder_cache(sel)
        return [live[k] for k in keep], tuple(t[sel] for t in tensors)

    def step(self, logits: torch.Tensor, live: list[int]) -> torch.Tensor:
        """Pick the next token of each live row (`logits` row k is row `live[k]`); return them."""
        chosen = logits.argmax(-1)
        for k, r in enumerate(live):
            if self.reqs[r].temperature > 0:
                chosen[k] = self._sample(logits[k], self.reqs[r].temperature, self.rngs[r])
        picked = _target_logprobs(logits, torch.arange(len(live), device=logits.device), chosen).tolist()
        for k, (r, tok) in enumerate(zip(live, chosen.tolist())):
            self.tokens[r].append(tok)
            self.logprob[r] += picked[k]
            self.done[r] = (
                tok in self.eos or len(self.tokens[r]) >= self.reqs[r].max_new_tokens or self._stopped(r)
            )
        return chosen

    @staticmethod
    def _sample(logits: torch.Tensor, temperature: float, rng: torch.Generator | None) -> int:
        probs = torch.softmax(logits / temperature, dim=-1).cpu()
        return int(torch.multinomial(probs, 1, generator=rng).item())

    def _stopped(self, r: int) -> bool:
        stop = self.reqs[r].stop
        return bool(stop) and cut_at_stop(self._text(r), stop)[1]

    def _text(self, r: int) -> str:
        toks = [t for t in self.tokens[r] if t not in self.eos]
        return self.backend.tokenizer.decode(toks, skip_special_tokens=True)

    def samples(self) -> list[Sample]:
        """Final texts cut at the first stop sequence."""
        return [
            Sample(cut_at_stop(self._text(r), req.stop)[0], self.logprob[r], len(self.tokens[r]))
            for r, req in enumerate(self.reqs)
        ]


@contextmanager
def _logits_only_at(model: Any, rows: torch.Tensor, cols: torch.Tensor) -> Iterator[dict[str, bool]]:
    """Feed the output head only the hidden states at (rows, cols), so logits come out as (1, N, vocab)
    in that order: the head and its vocabulary-wide softmax cost nothing at unscored positions.

    A pre-hook on the model's own head keeps whatever the model does after it (soft-capping, scaling).
    The yielded dict says whether the hook ran; when it did not, the caller indexes the full logits.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    state = {"ran": False}
    if head is None:
        yield state
        return

    def pick(_module: Any, args: tuple) -> tuple:
        state["ran"] = True
        return (args[0][rows, cols].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(pick)
    try:
        yield state
    finally:
        handle.remove()


def _target_logprobs(
    logits: torch.Tensor, select: torch.Tensor, targets: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """log_softmax(logits)[select, targets]: each position's softmax computed once, a chunk of positions
    at a time (bounded memory, no copy of the selected rows). log_softmax, not logit - logsumexp: the
    latter rounds at the logsumexp's magnitude and drifts by ~1e-5 per token."""
    out = logits.new_zeros(len(select))
    for start in range(0, logits.shape[0], chunk):
        logprobs = torch.log_softmax(logits[start : start + chunk], dim=-1)
        here = ((select >= start) & (select < start + chunk)).nonzero().squeeze(1)
        out[here] = logprobs[select[here] - start, targets[here]]
    return out


def _shared_prefix(seqs: list[list[int]]) -> int:
    """Tokens every sequence starts with, leaving each at least one of its own; 0 when too short to pay.

    Token ids, not strings, are compared, so the prefix always ends on a token boundary of every
    sequence's own tokenisation and its KV cache is exactly the one each sequence would compute.
    """
    length = min(common_prefix_length(seqs), min(len(s) for s in seqs) - 1)
    return length if length >= MIN_SHARED_PREFIX else 0


def _expand_cache(cache: Any, rows: int) -> Any:
    """A copy of a one-row KV cache repeated to `rows` rows (the original stays reusable)."""
    own = copy.deepcopy(cache)
    own.reorder_cache(torch.zeros(rows, dtype=torch.long, device=_cache_device(own)))
    return own


def _cache_device(cache: Any) -> torch.device:
    layer = cache.layers[0]
    return layer.keys.device


def _generator(req: GenerationRequest, sample: int) -> torch.Generator | None:
    if req.temperature <= 0:
        return None
    return torch.Generator().manual_seed(req.seed * 100_003 + sample)


def _continuation_score(logits: torch.Tensor, cont: list[int]) -> Loglikelihood:
    """Sum of log p(token) over the continuation, and whether greedy decoding would produce it."""
    target = torch.tensor(cont, device=logits.device)
    logprobs = torch.log_softmax(logits, dim=-1)
    picked = logprobs.gather(1, target[:, None]).squeeze(1)
    greedy = bool((logits.argmax(-1) == target).all().item())
    return Loglikelihood(float(picked.sum().item()), greedy, len(cont))


def _first_not_none(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _cache_keyword(model: Any) -> str:
    """The KV-cache argument's name: `cache` in current transformers, `past_key_values` before it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _cache_of(output: Any) -> Any:
    """The KV cache an output carries, under either name."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
