"""Hugging Face transformers backend (CPU or GPU): token-trie loglikelihoods and shared-prefix decoding.

Loglikelihood: the tokens every request starts with (a task's few-shot prefix) run once and their KV
cache serves every row. The rest becomes one token trie per context (context once, continuations
branching where they differ, see prefix_tree.py), tries are packed into rows with an ancestor-only 4D
mask, and logits are computed only where a continuation token is scored. Tokenisation follows
lm-evaluation-harness (`base.encode_pair`). Models whose attention cannot take a 4D mask (flash
attention, sliding windows) fall back to one right-padded row per request, as lm-eval runs them.

Generation: the prompts' shared prefix is prefilled once; each batch copies its KV cache and prefills
the remainders in groups of similar length, joined into one cache that grows in place (decode_cache.py).
Each decoding pass feeds a greedy row its last token plus prompt-lookup guesses of the next ones
(prompt_lookup.py), kept only where they equal its own greedy choices. A row leaves the batch as soon as
it emits EOS, a stop sequence or its token limit, so the others never wait for it; `n` samples copy
their prompt's cache. Sliding-window models prefill one left-padded batch and decode without guesses.

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
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ...fingerprint import text_digest
from ..prompting import stop_token_ids
from ..requests import GenerationRequest, Loglikelihood, LoglikelihoodRequest, Sample
from .base import Backend, cut_at_stop, encode_pair, encode_text
from .decode_cache import (
    attention_pair_cost,
    compact,
    growable,
    grows_in_place,
    join_left_padded,
    prefill_groups,
)
from .decoding import Decoder, target_logprobs
from .forward_traits import ForwardTraits, attends_whole_sequence, cache_of, probe_forward_traits
from .model_identity import source_digest, state_dict_digest, tokenizer_digest
from .prefix_tree import PackedBatch, Trie, batch_inputs, build_tries, common_prefix_length, pack

# A prefix shared by every request of a call is run once only when it is at least this long: shorter
# ones (PIQA's "Question:") cost more in cache copies than they save.
MIN_SHARED_PREFIX = 32
# A loglikelihood row filled to less than MIN_ROW_FILL of its batch's widest row starts the next batch.
MIN_ROW_FILL = 0.75
# Decoding feeds each greedy row up to MAX_DRAFT prompt-lookup guesses, keeping a pass to about
# STEP_TOKENS fed tokens: a pass costs about one read of the weights up to there, and more beyond.
MAX_DRAFT = 8
STEP_TOKENS = 24
FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"
# A decoding cache drops the columns no live row attends once there are this many (or this share).
MIN_DEAD_COLUMNS = 64
DEAD_FRACTION = 0.1


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
        model.eval()  # as lm-eval's hf model does: an in-memory model fresh from training has dropout on
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
        self._traits: ForwardTraits | None = None
        self._pair_cost: float | None = None  # attention_pair_cost, once
        self._rules: dict[tuple[int, int], Any] = {}  # generation_rules per prompt and new-token limit

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
                _generation_config_json(self.model),
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

    @property
    def traits(self) -> ForwardTraits:
        """What the model's forward honours (padding, masked gaps, 4D masks, a KV cache), probed once."""
        if self._traits is None:
            self._traits = probe_forward_traits(self.model, self._cache_kw)
            if self._traits.notes:
                from ...progress import log_event

                name = type(self.model).__name__
                log_event("eval", f"{name} takes slower exact paths; it failed {self._traits.slower_paths()}")
        return self._traits

    def _tree_attention(self) -> bool:
        """Whether packed tries score exactly: a custom 4D mask over full (not windowed) attention that
        places tokens by `position_ids` (alibi models place them by column)."""
        implementation = getattr(self.model.config, "_attn_implementation", None)
        return implementation in ("sdpa", "eager") and self._full_attention() and self.traits.tree_masks

    def _full_attention(self) -> bool:
        """Whether every attention layer sees the whole sequence (no sliding or local window)."""
        return attends_whole_sequence(self.model.config)

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

        Rows hold up to `row_tokens` tokens (a longer trie gets a row of its own): attention within a row
        is quadratic, so packing long tries together costs more than the padding it saves.
        """
        prefix = _shared_prefix([ctx for ctx, _ in pairs])
        tries = build_tries(pairs, prefix)
        return prefix, tries, list(self._row_batches(pack(tries, self.row_tokens), prefix))

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
        sums.index_add_(0, request, target_logprobs(logits, select, target).double())
        misses.index_add_(0, request, (logits.argmax(-1)[select] != target).long())

    def _prefix_cache(self, prefix: list[int]) -> Any:
        """KV cache of the shared prefix (one row), its logits skipped."""
        last = torch.tensor([len(prefix) - 1], device=self.device)
        with _logits_only_at(self.model, torch.tensor([0], device=self.device), last):
            out = self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
        return cache_of(out)

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
        A model that cannot continue its own cache (traits.kv_cache) runs each request as one row instead.
        """
        if not self.traits.kv_cache:
            return [self._score_one_row(ctx, cont) for ctx, cont in pairs]
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for i, (ctx, cont) in enumerate(pairs):
            groups.setdefault(tuple(ctx), []).append((i, cont))
        results: list[Loglikelihood | None] = [None] * len(pairs)
        for ctx, members in groups.items():
            out = self.model(input_ids=torch.tensor([ctx], device=self.device), use_cache=True)
            last, cache = out.logits[0, -1:].float(), cache_of(out)
            for n, (i, cont) in enumerate(members):
                logits = [last]
                if len(cont) > 1:
                    own = cache if n == len(members) - 1 else copy.deepcopy(cache)
                    tail_ids = torch.tensor([cont[:-1]], device=self.device)
                    tail = self.model(input_ids=tail_ids, **{self._cache_kw: own}, use_cache=True)
                    logits.append(tail.logits[0].float())
                results[i] = _continuation_score(torch.cat(logits), cont)
        return results  # type: ignore[return-value]

    def _score_one_row(self, ctx: list[int], cont: list[int]) -> Loglikelihood:
        """One request as one unpadded row: context and continuation, no cache."""
        ids = torch.tensor([(ctx + cont)[:-1]], device=self.device)
        logits = self.model(input_ids=ids, use_cache=False).logits[0]
        return _continuation_score(logits[len(ctx) - 1 :].float(), cont)

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
        if not self.traits.kv_cache:  # no transformers Cache to decode from: the model's own generate
            return [self._generate_alone(req, prompt) for req, prompt in zip(requests, prompts)]
        if self.deterministic or not self.traits.left_padding:
            for i, req in enumerate(requests):  # each request alone: its n rows share one unpadded prompt
                self._generate_batch([req], [prompts[i]], results, [i], 0, None)
            return results
        prefix = _shared_prefix(prompts) if len(prompts) > 1 else 0
        cache = self._prefix_cache(prompts[0][:prefix]) if prefix else None
        for batch in self._generation_batches(requests, prompts):
            reqs, ids = [requests[j] for j in batch], [prompts[j] for j in batch]
            self._generate_batch(reqs, ids, results, batch, prefix, cache)
        return results

    def generation_config(self, **overrides: Any) -> Any:
        """The model's generation config as `generate` merges it (its own settings over transformers'
        defaults), then `overrides`: what HFLM's `generate` calls decode under."""
        try:
            config, _ = self.model._prepare_generation_config(None, **overrides)
        except ValueError:  # generation settings left in model.config, which `generate` refuses
            config = copy.deepcopy(self.model.generation_config)
            config.update(**overrides)
        return config

    def generation_rules(self, prompt_length: int, max_new_tokens: int) -> Any:
        """The logits processors the model's generation config asks of greedy `generate` after a prompt of
        this length (repetition penalty, n-gram blocking, bad words, minimum length, forced tokens, ...),
        as lm-eval's `hf` model gets them; None when it asks none (SmolLM2, most base models), the fast
        case. For an encoder-decoder the prompt is the decoder's start token."""
        key = (prompt_length, max_new_tokens)
        if not hasattr(self.model, "_get_logits_processor"):  # a model without transformers' generate
            return None
        if key not in self._rules:
            config = self.generation_config(
                do_sample=False, num_beams=1, max_length=prompt_length + max_new_tokens
            )
            rules = self.model._get_logits_processor(
                config, input_ids_seq_length=prompt_length, device=self.device, model_kwargs={}
            )
            self._rules[key] = rules if len(rules) else None
        return self._rules[key]

    def _generate_alone(self, req: GenerationRequest, prompt: list[int]) -> list[Sample]:
        """One request through transformers' `generate` (models whose forward returns no `Cache`, such as
        RWKV): greedy or temperature sampling under the model's generation rules, as the decoding loop does
        it (one beam, no top-k/top-p); the same stop tokens, stop strings, sampling seed (the caller's
        random state is left as it was) and log-probabilities."""
        sampled = req.temperature > 0
        config = self.generation_config(
            max_new_tokens=req.max_new_tokens,
            do_sample=sampled,
            num_beams=1,
            **({"temperature": req.temperature, "top_k": 0, "top_p": 1.0} if sampled else {}),
            num_return_sequences=req.n,
            eos_token_id=sorted(stop_token_ids(self.model, self.tokenizer)),
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            output_logits=True,
        )
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda, device_type=self.device.type if cuda else "cuda"):
            torch.manual_seed(req.seed)
            out = self.model.generate(
                torch.tensor([prompt], device=self.device),
                attention_mask=torch.ones((1, len(prompt)), dtype=torch.long, device=self.device),
                generation_config=config,
            )
        logits = torch.stack(out.logits, dim=1).float()  # (n, steps, vocab)
        new = out.sequences[:, len(prompt) :]
        return [self._sample_of(req, new[k].tolist(), logits[k]) for k in range(req.n)]

    def _sample_of(self, req: GenerationRequest, tokens: list[int], logits: torch.Tensor) -> Sample:
        """A `generate` row as a Sample: tokens up to and with its first stop token, cut at a stop string."""
        eos = stop_token_ids(self.model, self.tokenizer)
        end = next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))
        tokens = tokens[:end]
        picked = torch.log_softmax(logits[:end], dim=-1).gather(
            1, torch.tensor(tokens, dtype=torch.long)[:, None].to(logits.device)
        )
        text = self.tokenizer.decode([t for t in tokens if t not in eos], skip_special_tokens=True)
        return Sample(cut_at_stop(text, req.stop)[0], float(picked.sum()), len(tokens))

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
        room = max(r.max_new_tokens for r in reqs)
        logits, cache, mask, next_pos = self._prefill(prompts, prefix, prefix_cache, room)
        rows, decoder = Decoder.per_sample(self, reqs)
        decoder.follow_rules([prompts[b] for b in rows], self.generation_rules)
        if len(rows) != len(reqs):  # n samples per prompt: copy its cache once per sample
            cache.reorder_cache(torch.tensor(rows, device=self.device))
        if grows_in_place(cache):
            decoder.enable_drafts([prompts[b] for b in rows])
        idx = torch.tensor(rows, device=self.device)
        self._decode(decoder, cache, logits[idx], mask[idx], next_pos[idx])
        for row, sample in enumerate(decoder.samples()):
            results[slots[rows[row]]].append(sample)

    def _decode(
        self, decoder: Decoder, cache: Any, logits: torch.Tensor, mask: torch.Tensor, next_pos: torch.Tensor
    ) -> None:
        """Decode every row to its end from the prompts' last logits.

        Each pass feeds every live row its last token plus its prompt-lookup drafts (prompt_lookup.py):
        kept drafts' columns stay in the cache, the others are masked out for good and the row's
        positions go on after the last kept one. `next_pos[k]` is where row k's next input goes.
        """
        live = list(range(len(decoder.reqs)))
        slots, drafts, fed = list(live), [[] for _ in live], 0
        while True:
            kept = decoder.advance(logits, live, slots, drafts)
            if fed:
                for k, count in enumerate(kept):
                    mask[k, mask.shape[1] - fed + count :] = 0
                next_pos = next_pos + torch.tensor(kept, device=self.device)
            last = torch.tensor([decoder.tokens[r][-1] for r in live], device=self.device)
            still = self._drop_finished(decoder, live, cache, mask, next_pos, last)
            if still is None:
                return
            live, (mask, next_pos, last) = still
            limit = min(MAX_DRAFT, STEP_TOKENS // len(live) - 1)
            drafts = [decoder.draft(r, limit) for r in live]
            logits, slots, mask, fed = self._feed(cache, last, drafts, mask, next_pos)

    def _drop_finished(
        self, decoder: Decoder, live: list[int], cache: Any, mask: torch.Tensor, *tensors: torch.Tensor
    ) -> tuple[list[int], tuple[torch.Tensor, ...]] | None:
        """The rows still live and their mask and tensors, finished rows dropped from the cache too.

        A joined cache also loses the columns no live row attends (padding left of the shortest prompt,
        drafts every row rejected) once they are worth a copy: attention reads every column of every row.
        """
        if not grows_in_place(cache):
            return decoder.drop_finished(live, cache, mask, *tensors)
        keep = [k for k, r in enumerate(live) if not decoder.done[r]]
        if not keep:
            return None
        rows = torch.tensor(keep, device=self.device)
        attended = mask.index_select(0, rows).bool().any(0)
        dead = mask.shape[1] - int(attended.sum())
        if len(keep) == len(live) and dead < max(MIN_DEAD_COLUMNS, DEAD_FRACTION * mask.shape[1]):
            return live, (mask, *tensors)
        columns = attended.nonzero().squeeze(1)
        compact(cache, rows, columns)
        mask = mask.index_select(0, rows).index_select(1, columns)
        return [live[k] for k in keep], (mask, *(t.index_select(0, rows) for t in tensors))

    def _feed(
        self,
        cache: Any,
        last: torch.Tensor,
        drafts: list[list[int]],
        mask: torch.Tensor,
        next_pos: torch.Tensor,
    ) -> tuple[torch.Tensor, list[int], torch.Tensor, int]:
        """One decoding pass: each row's last token then its drafts, right-padded to the longest.

        Returns the logits of the fed (not padded) positions, each row's first slot in them, the grown
        attention mask and how many columns the pass added.
        """
        width = 1 + max(len(d) for d in drafts)
        ids = torch.full((len(drafts), width), self.pad_id, dtype=torch.long)
        fed = torch.zeros((len(drafts), width), dtype=mask.dtype)
        for k, draft in enumerate(drafts):
            ids[k, 1 : 1 + len(draft)] = torch.tensor(draft, dtype=torch.long)
            fed[k, : 1 + len(draft)] = 1
        ids[:, 0] = last.cpu()
        ids, fed = ids.to(self.device), fed.to(self.device)
        mask = torch.cat([mask, fed], dim=1)
        rows, cols = fed.nonzero(as_tuple=True)
        slots = [0, *torch.cumsum(fed.sum(1), 0).tolist()[:-1]]
        positions = next_pos[:, None] + torch.arange(width, device=self.device)
        with (
            _grouped_query_sdpa(width > 1 and self.device.type == "cpu"),
            _logits_only_at(self.model, rows, cols) as picked,
        ):
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                **{self._cache_kw: cache},
                use_cache=True,
            )
        logits = out.logits[0] if picked["ran"] else out.logits[rows, cols]
        return logits.float(), slots, mask, width

    def _prefill(
        self, prompts: list[list[int]], prefix: int, prefix_cache: Any, room: int
    ) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        """Last-token logits, KV cache, attention mask and next positions of `prompts` (longest first).

        Full-attention models that ignore masked columns prefill them in groups of similar length
        (`prefill_groups`) and decode from one joined cache that grows in place (decode_cache.py); others
        as one left-padded batch.
        """
        tails = [p[prefix:] for p in prompts]
        if not (self._full_attention() and self.traits.masked_gaps):  # no joined cache, no drafts
            return self._prefill_group(tails, prefix, prefix_cache)
        if self._pair_cost is None:
            self._pair_cost = attention_pair_cost(self.model)
        groups = prefill_groups([len(t) for t in tails], pair_cost=self._pair_cost, always_masked=prefix > 0)
        first = self._prefill_group([tails[i] for i in groups[0]], prefix, prefix_cache)
        if not growable(first[1]):  # layer caches that cannot be joined: one padded batch
            return first if len(groups) == 1 else self._prefill_group(tails, prefix, prefix_cache)
        rest = [self._prefill_group([tails[i] for i in group], prefix, prefix_cache) for group in groups[1:]]
        parts = [first, *rest]
        logits = torch.cat([part[0] for part in parts])
        next_pos = torch.cat([part[3] for part in parts])
        cache, mask = join_left_padded([(part[1], part[2]) for part in parts], prefix, room)
        return logits, cache, mask, next_pos

    def _prefill_group(
        self, tails: list[list[int]], prefix: int, prefix_cache: Any
    ) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        """One left-padded forward over `tails` after the shared prefix's cache (copied per row)."""
        ids, mask = self._left_pad(tails)
        positions = (prefix + mask.cumsum(-1) - 1).clamp(min=0)
        if prefix:
            mask = torch.cat([torch.ones_like(mask[:, :1]).expand(-1, prefix), mask], dim=1)
        past = _expand_cache(prefix_cache, len(tails)) if prefix_cache is not None else None
        last = torch.full((len(tails),), ids.shape[1] - 1, device=self.device)
        with _logits_only_at(self.model, torch.arange(len(tails), device=self.device), last) as picked:
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                **{self._cache_kw: past},
                use_cache=True,
            )
        logits = out.logits[0] if picked["ran"] else out.logits[:, -1]
        return logits.float(), cache_of(out), mask, positions[:, -1] + 1

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)


@contextmanager
def _grouped_query_sdpa(active: bool) -> Iterator[None]:
    """While active, transformers' sdpa attention passes `enable_gqa` instead of repeating each key/value
    head for its query heads, which it does when a mask is given and several query tokens are fed: a
    copy of the whole KV cache per layer and pass. Same result; only the copy is saved. CPU only: on CUDA,
    transformers notes, a mask with `enable_gqa` falls back to the math kernel."""
    if not active or os.environ.get(FORCE_GQA) is not None:
        yield
        return
    os.environ[FORCE_GQA] = "1"
    try:
        yield
    finally:
        os.environ.pop(FORCE_GQA, None)


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


def _continuation_score(logits: torch.Tensor, cont: list[int]) -> Loglikelihood:
    """Sum of log p(token) over the continuation, and whether greedy decoding would produce it."""
    target = torch.tensor(cont, device=logits.device)
    logprobs = torch.log_softmax(logits, dim=-1)
    picked = logprobs.gather(1, target[:, None]).squeeze(1)
    greedy = bool((logits.argmax(-1) == target).all().item())
    return Loglikelihood(float(picked.sum().item()), greedy, len(cont))


def _generation_config_json(model: Any) -> str:
    """The generation config a decoding follows (its rules change greedy text), as JSON; "" if none."""
    config = getattr(model, "generation_config", None)
    return config.to_json_string(use_diff=False) if config is not None else ""


def _first_not_none(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _cache_keyword(model: Any) -> str:
    """The KV-cache argument's name: `cache` in current transformers, `past_key_values` before it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
