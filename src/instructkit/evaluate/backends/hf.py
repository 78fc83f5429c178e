"""Hugging Face transformers backend (CPU or GPU): shared-context loglikelihoods and cached decoding.

Loglikelihood: requests with the same context tokens are grouped; each context runs once, its KV cache
is copied to one row per choice, and only the continuation tokens run again (when that saves at least a
quarter of the tokens; otherwise each context+choice is one right-padded row, as lm-eval runs them). Contexts are right-padded
and the 2D attention mask marks the padding, so every row sees exactly its own context (a test pins
this against running each context+choice alone). Tokenisation follows lm-evaluation-harness: the
continuation's tokens are those of tokenize(context + continuation) beyond tokenize(context).

Generation: prompts are left-padded and prefilled once; `n` samples copy the prompt's cache, then
decode token by token, each row stopping at EOS, a stop sequence or the token limit.

Batch size and padding change the shapes of the matrix products, hence the order of float reductions:
by default log-likelihoods differ across batch sizes by float32 rounding (docs/evaluation.md states
the measured bound; predictions do not change). With `deterministic=True` every request runs with
shapes that depend on that request alone (its context as one row, then its continuation on that
context's KV cache; each generation request as its own batch), so results are bit-identical for any
batch size, request order or resumed run on the same device, dtype and library versions.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ...fingerprint import text_digest
from ..requests import GenerationRequest, Loglikelihood, LoglikelihoodRequest, Sample
from .base import Backend, cut_at_stop
from .model_identity import source_digest, state_dict_digest, tokenizer_digest

# Run a context once and reuse its KV cache only when that skips at least this share of the tokens
# (short contexts with long choices, like PIQA, are faster as plain full rows).
SHARE_MIN_SAVING = 0.25


@dataclass
class _Unit:
    """One context and (some of) its continuations: the rows of one cache expansion."""

    context: list[int]
    conts: list[list[int]] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)

    def width(self) -> int:
        return len(self.context) + max(len(c) for c in self.conts)


class HFBackend(Backend):
    """A transformers causal LM and its tokenizer; `batch_size` bounds rows per forward pass.

    `deterministic=True` trades batching for bit-identical results whatever the batch size.
    `source` (set by from_pretrained) is the folder or hub id the weights came from: the fingerprint then
    digests its files (memoized) instead of the in-memory weights.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 16,
        max_batch_tokens: int | None = None,
        max_length: int | None = None,
        deterministic: bool = False,
        source: str | None = None,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = max(1, batch_size)
        self.max_batch_tokens = max_batch_tokens
        self.deterministic = deterministic
        self.source = source
        self._fingerprint: str | None = None
        self.max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
        self.device = next(model.parameters()).device
        self.pad_id = _first_not_none(tokenizer.pad_token_id, tokenizer.eos_token_id, 0)

    @classmethod
    def from_pretrained(
        cls, path: str, dtype: str = "auto", device: str | None = None, **kwargs: Any
    ) -> HFBackend:
        """Load model and tokenizer from a local directory or hub id (safetensors, no remote code)."""
        from ...hub import load_causal_lm, load_tokenizer

        torch_dtype = torch.float32 if dtype == "float32" else getattr(torch, dtype, "auto")
        model = load_causal_lm(path, dtype=torch_dtype).eval()
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), load_tokenizer(path), source=path, **kwargs)

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

    # ---- tokenisation (lm-eval's conventions) ----

    def encode(self, text: str) -> list[int]:
        """Token ids; special tokens as the tokenizer adds them, unless the text already starts with BOS."""
        bos = self.tokenizer.bos_token
        add = not (bos and text.startswith(bos))
        return self.tokenizer.encode(text, add_special_tokens=add)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids such that the continuation is whole[len(context):]."""
        if not context:
            cont = self.tokenizer.encode(continuation, add_special_tokens=False)
            prefix = _first_not_none(self.tokenizer.bos_token_id, self.tokenizer.eos_token_id)
            return ([prefix], cont) if prefix != cont[0] else (cont[:1], cont[1:])
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole, ctx = self.encode(context + continuation), self.encode(context)
        return ctx, whole[len(ctx) :]

    # ---- loglikelihood ----

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """Score every request; each distinct context is run once per batch it appears in."""
        if self.deterministic:
            return self._score_alone(requests)
        results: list[Loglikelihood | None] = [None] * len(requests)
        for batch in self._batches(self._units(requests)):
            for index, result in self._score_batch(batch):
                results[index] = result
        return results  # type: ignore[return-value]

    def _pair(self, req: LoglikelihoodRequest) -> tuple[list[int], list[int]]:
        """Context and continuation ids, the context left-truncated to fit `max_length` like lm-eval."""
        ctx, cont = self.encode_pair(req.context, req.continuation)
        return ctx[-max(1, self.max_length - len(cont)) :], cont

    def _score_alone(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """Deterministic mode: each context runs as one unpadded row, then each of its continuations
        runs on a copy of its KV cache, so every shape depends on one request only.

        A copy rather than `crop`: sliding-window caches forget context tokens and cannot be cropped back.
        """
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for i, req in enumerate(requests):
            ctx, cont = self._pair(req)
            groups.setdefault(tuple(ctx), []).append((i, cont))
        results: list[Loglikelihood | None] = [None] * len(requests)
        for ctx, members in groups.items():
            out = self.model(input_ids=torch.tensor([ctx], device=self.device), use_cache=True)
            last, cache = out.logits[0, -1:].float(), out.past_key_values
            for n, (i, cont) in enumerate(members):
                logits = [last]
                if len(cont) > 1:
                    own = cache if n == len(members) - 1 else copy.deepcopy(cache)
                    tail_ids = torch.tensor([cont[:-1]], device=self.device)
                    tail = self.model(input_ids=tail_ids, past_key_values=own, use_cache=True)
                    logits.append(tail.logits[0].float())
                results[i] = _continuation_score(torch.cat(logits), cont)
        return results  # type: ignore[return-value]

    def _units(self, requests: Sequence[LoglikelihoodRequest]) -> list[_Unit]:
        groups: dict[tuple[int, ...], _Unit] = {}
        for i, req in enumerate(requests):
            ctx, cont = self._pair(req)
            unit = groups.setdefault(tuple(ctx), _Unit(list(ctx)))
            unit.conts.append(cont)
            unit.indices.append(i)
        units = []
        for unit in groups.values():  # split contexts with more choices than fit one batch
            for s in range(0, len(unit.conts), self.batch_size):
                units.append(
                    _Unit(
                        unit.context,
                        unit.conts[s : s + self.batch_size],
                        unit.indices[s : s + self.batch_size],
                    )
                )
        return sorted(units, key=lambda u: (-u.width(), u.context))

    def _batches(self, units: list[_Unit]) -> list[list[_Unit]]:
        batches: list[list[_Unit]] = []
        rows, width = 0, 0
        for unit in units:  # units arrive widest first, so the first unit sets the batch width
            n = len(unit.conts)
            fits_tokens = (
                self.max_batch_tokens is None
                or (rows + n) * max(width, unit.width()) <= self.max_batch_tokens
            )
            if batches and rows + n <= self.batch_size and fits_tokens:
                batches[-1].append(unit)
                rows += n
            else:
                batches.append([unit])
                rows, width = n, unit.width()
        return batches

    def _score_batch(self, batch: list[_Unit]) -> list[tuple[int, Loglikelihood]]:
        """Shared-context scoring when it saves enough tokens, else one full row per choice."""
        saved = sum(len(u.context) * (len(u.conts) - 1) for u in batch)
        total = sum(len(u.context) + len(c) for u in batch for c in u.conts)
        return self._score_shared(batch) if saved >= SHARE_MIN_SAVING * total else self._score_full(batch)

    def _score_full(self, batch: list[_Unit]) -> list[tuple[int, Loglikelihood]]:
        # Right padding and no attention mask: causal attention never lets a real token see a pad.
        rows = [(u.context, c, i) for u in batch for c, i in zip(u.conts, u.indices)]
        ids, _, _ = self._right_pad([ctx + cont for ctx, cont, _ in rows])
        logits = self.model(input_ids=ids, use_cache=False).logits
        return [
            (i, _continuation_score(logits[r, len(ctx) - 1 : len(ctx) + len(cont) - 1].float(), cont))
            for r, (ctx, cont, i) in enumerate(rows)
        ]

    def _score_shared(self, batch: list[_Unit]) -> list[tuple[int, Loglikelihood]]:
        ctx_ids, ctx_mask, ctx_lens = self._right_pad([u.context for u in batch])
        positions = torch.arange(ctx_ids.shape[1], device=self.device).expand_as(ctx_ids)
        out = self.model(input_ids=ctx_ids, attention_mask=ctx_mask, position_ids=positions, use_cache=True)
        row_unit = [b for b, u in enumerate(batch) for _ in u.conts]
        conts = [c for u in batch for c in u.conts]
        rows = torch.tensor(row_unit, device=self.device)
        last = out.logits[torch.arange(len(batch)), torch.tensor(ctx_lens) - 1].float()[rows]  # (R, V)
        logits = [last.unsqueeze(1)]
        if max(len(c) for c in conts) > 1:
            cache = out.past_key_values
            cache.reorder_cache(rows)
            tail_ids, tail_mask, _ = self._right_pad([c[:-1] for c in conts])
            tail_pos = torch.tensor([ctx_lens[b] for b in row_unit], device=self.device)[:, None]
            tail_pos = tail_pos + torch.arange(tail_ids.shape[1], device=self.device)
            mask = torch.cat([ctx_mask[rows], tail_mask], dim=1)
            tail = self.model(
                input_ids=tail_ids,
                attention_mask=mask,
                position_ids=tail_pos,
                past_key_values=cache,
                use_cache=True,
            )
            logits.append(tail.logits.float())
        logits_all = torch.cat(logits, dim=1)  # (R, max_cont, V): position j predicts continuation token j
        indices = [i for u in batch for i in u.indices]
        return [
            (idx, _continuation_score(logits_all[r, : len(c)], c))
            for r, (idx, c) in enumerate(zip(indices, conts))
        ]

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
        encoded = [self.encode(r.prompt) for r in requests]
        results: list[list[Sample]] = [[] for _ in requests]
        if self.deterministic:  # each request alone: its n rows share one unpadded prompt
            for i, req in enumerate(requests):
                self._generate_batch([req], [encoded[i]], results, [i])
            return results
        order = sorted(range(len(requests)), key=lambda i: (-len(encoded[i]), i))
        batch: list[int] = []
        for i in order:
            if batch and sum(requests[j].n for j in batch) + requests[i].n > self.batch_size:
                self._generate_batch(
                    [requests[j] for j in batch], [encoded[j] for j in batch], results, batch
                )
                batch = []
            batch.append(i)
        if batch:
            self._generate_batch([requests[j] for j in batch], [encoded[j] for j in batch], results, batch)
        return results

    def _generate_batch(
        self,
        reqs: list[GenerationRequest],
        prompts: list[list[int]],
        results: list[list[Sample]],
        slots: list[int],
    ) -> None:
        limit = max(r.max_new_tokens for r in reqs)
        prompts = [p[-max(1, self.max_length - limit) :] for p in prompts]
        ids, mask = self._left_pad(prompts)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        rows = torch.tensor([b for b, r in enumerate(reqs) for _ in range(r.n)], device=self.device)
        cache = out.past_key_values
        cache.reorder_cache(rows)
        decoder = _Decoder(
            self, [reqs[b] for b in rows.tolist()], [s for b, r in enumerate(reqs) for s in range(r.n)]
        )
        logits, mask, next_pos = out.logits[rows, -1].float(), mask[rows], positions[rows, -1] + 1
        for _ in range(limit):
            token = decoder.step(logits)
            if decoder.all_done():
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            step = self.model(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=next_pos[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            logits, next_pos = step.logits[:, -1].float(), next_pos + 1
        for row, sample in enumerate(decoder.samples()):
            results[slots[rows[row].item()]].append(sample)

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
        self.eos = backend.tokenizer.eos_token_id

    def step(self, logits: torch.Tensor) -> torch.Tensor:
        """Pick each live row's next token, record it, and return the token ids to feed next."""
        logprobs = torch.log_softmax(logits, dim=-1)
        chosen = torch.full((len(self.reqs),), self.backend.pad_id, dtype=torch.long, device=logits.device)
        for r, req in enumerate(self.reqs):
            if self.done[r]:
                continue
            tok = self._choose(logits[r], req.temperature, self.rngs[r])
            chosen[r] = tok
            self.tokens[r].append(tok)
            self.logprob[r] += logprobs[r, tok].item()
            self.done[r] = tok == self.eos or len(self.tokens[r]) >= req.max_new_tokens or self._stopped(r)
        return chosen

    @staticmethod
    def _choose(logits: torch.Tensor, temperature: float, rng: torch.Generator | None) -> int:
        if temperature <= 0:
            return int(logits.argmax().item())
        probs = torch.softmax(logits / temperature, dim=-1).cpu()
        return int(torch.multinomial(probs, 1, generator=rng).item())

    def _stopped(self, r: int) -> bool:
        stop = self.reqs[r].stop
        return bool(stop) and cut_at_stop(self._text(r), stop)[1]

    def _text(self, r: int) -> str:
        toks = [t for t in self.tokens[r] if t != self.eos]
        return self.backend.tokenizer.decode(toks, skip_special_tokens=True)

    def all_done(self) -> bool:
        return all(self.done)

    def samples(self) -> list[Sample]:
        """Final texts cut at the first stop sequence."""
        return [
            Sample(cut_at_stop(self._text(r), req.stop)[0], self.logprob[r], len(self.tokens[r]))
            for r, req in enumerate(self.reqs)
        ]


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
