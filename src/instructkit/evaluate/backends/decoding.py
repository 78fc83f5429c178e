"""Per-row decoding state shared by the causal and encoder-decoder backends: chosen tokens, log-probs,
stop checks, per-sample random generators and (greedy rows) prompt-lookup drafts to verify."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..prompting import stop_token_ids
from ..requests import GenerationRequest, Sample
from .base import cut_at_stop
from .prompt_lookup import NgramIndex


class Decoder:
    """Decoding rows of one batch: what each has emitted, its log-probability and whether it is done."""

    def __init__(self, backend: Any, reqs: list[GenerationRequest], sample_ids: list[int]):
        self.backend, self.reqs = backend, reqs
        self.tokens: list[list[int]] = [[] for _ in reqs]
        self.logprob = [0.0] * len(reqs)
        self.done = [False] * len(reqs)
        self.rngs = [_generator(r, s) for r, s in zip(reqs, sample_ids)]
        self.eos = stop_token_ids(backend.model, backend.tokenizer)  # EOS + generation_config's eos ids
        self.lookup: list[NgramIndex | None] = [None] * len(reqs)
        self.rules: list[Any] = [None] * len(reqs)  # logits processors of the model's generation config
        self.prompts: list[Sequence[int]] = [() for _ in reqs]

    @classmethod
    def per_sample(cls, backend: Any, reqs: list[GenerationRequest]) -> tuple[list[int], Decoder]:
        """One decoding row per sample (`req.n` per request): each row's request index, and the decoder."""
        rows = [b for b, r in enumerate(reqs) for _ in range(r.n)]
        return rows, cls(backend, [reqs[b] for b in rows], [s for r in reqs for s in range(r.n)])

    def follow_rules(self, prompts: Sequence[Sequence[int]], rules_for: Any) -> None:
        """Give each row the logits processors `rules_for(prompt length, token limit)` returns (None:
        none), applied to its scores before it picks a token, as `generate` applies the model's generation
        config. `prompts[r]`: the ids row r decodes after (a decoder's start token for an encoder-decoder)."""
        for r, prompt in enumerate(prompts):
            self.prompts[r], self.rules[r] = prompt, rules_for(len(prompt), self.reqs[r].max_new_tokens)

    def enable_drafts(self, prompts: Sequence[Sequence[int]]) -> None:
        """Index each greedy row's prompt (`prompts[r]`, row order) for prompt-lookup drafts; rows under
        generation rules take none (a rule's verdict on a guess would depend on the guesses before it)."""
        for r, req in enumerate(self.reqs):
            if req.temperature <= 0 and self.rules[r] is None:
                self.lookup[r] = NgramIndex(prompts[r])

    def draft(self, r: int, limit: int) -> list[int]:
        """Tokens to feed after row `r`'s next input as guesses (none for sampled rows)."""
        index = self.lookup[r]
        if index is None:
            return []
        room = self.reqs[r].max_new_tokens - len(self.tokens[r]) - 1  # the step emits one token anyway
        return index.draft(min(limit, room))

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
        self.advance(logits, live, list(range(len(live))), [[] for _ in live])
        return torch.tensor([self.tokens[r][-1] for r in live], device=logits.device)

    def advance(
        self, logits: torch.Tensor, live: list[int], slots: list[int], drafts: list[list[int]]
    ) -> list[int]:
        """Emit tokens for each live row from its logits, one position per fed token.

        Row `live[k]` was fed its last token then `drafts[k]`; their logits are rows `slots[k]` onwards.
        Position i's choice is emitted; the next position counts only if that choice equals the draft
        token fed there. Returns, per live row, how many fed positions were kept (kept drafts + 1).
        """
        scores = self._ruled(logits, live, slots)
        chosen = scores.argmax(-1)
        for k, r in enumerate(live):
            if self.reqs[r].temperature > 0:
                chosen[slots[k]] = self._sample(scores[slots[k]], self.reqs[r].temperature, self.rngs[r])
        picked = target_logprobs(logits, torch.arange(len(chosen), device=logits.device), chosen).tolist()
        chosen_ids = chosen.tolist()
        kept = []
        for k, r in enumerate(live):
            i = 0
            while True:
                token = chosen_ids[slots[k] + i]
                self._emit(r, token, picked[slots[k] + i])
                if self.done[r] or i >= len(drafts[k]) or token != drafts[k][i]:
                    break
                i += 1
            kept.append(i + 1)
        return kept

    def _ruled(self, logits: torch.Tensor, live: list[int], slots: list[int]) -> torch.Tensor:
        """`logits` with each ruled row's processors applied at its (only) fed position; the log-probs
        reported stay those of the model's own logits, as `generate`'s `output_logits`."""
        if all(self.rules[r] is None for r in live):
            return logits
        scores = logits.clone()
        for k, r in enumerate(live):
            if self.rules[r] is not None:
                ids = torch.tensor([[*self.prompts[r], *self.tokens[r]]], device=logits.device)
                scores[slots[k]] = self.rules[r](ids, scores[slots[k]][None])[0]
        return scores

    def _emit(self, r: int, token: int, logprob: float) -> None:
        self.tokens[r].append(token)
        self.logprob[r] += logprob
        if self.lookup[r] is not None:
            self.lookup[r].append(token)  # type: ignore[union-attr]
        self.done[r] = (
            token in self.eos or len(self.tokens[r]) >= self.reqs[r].max_new_tokens or self._stopped(r)
        )

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


def target_logprobs(
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


def _generator(req: GenerationRequest, sample: int) -> torch.Generator | None:
    if req.temperature <= 0:
        return None
    return torch.Generator().manual_seed(req.seed * 100_003 + sample)
