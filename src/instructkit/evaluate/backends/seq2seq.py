"""Hugging Face encoder-decoder backend (T5, Flan-T5, mT5, UL2, BART): the encoder runs once per input.

Loglikelihood: requests are grouped by context; each distinct context runs through the encoder once
and every continuation (a multiple-choice option) is scored by the decoder against that one encoder
output, the decoders of many options batched together. Generation: the encoder runs once per prompt;
its `n` samples share that output, and rows decode step by step with a KV cache, leaving the batch on
EOS, a stop sequence (per row) or their token limit, exactly like the causal backend (`decoding.Decoder`:
same sampling seeds, same stop handling, same summed log-probabilities).

Tokenisation follows lm-evaluation-harness's `backend="seq2seq"`: the context is encoded with the
tokenizer's special tokens (T5 appends `</s>`), the continuation separately without them, trailing
context spaces moved to the continuation; contexts and continuations keep their last `max_length`
tokens. The decoder reads `decoder_start_token_id` then the continuation shifted right, as training does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ...errors import InstructkitError
from ..requests import GenerationRequest, Loglikelihood, Sample
from .decoding import Decoder
from .forward_traits import cache_of
from .hf import HFBackend, _continuation_score, _first_not_none

TOKENIZER_INFINITY = int(1e30)  # what transformers sets as model_max_length when a tokenizer has none


class Seq2SeqBackend(HFBackend):
    """A transformers encoder-decoder LM and its tokenizer, behind the same interface as `HFBackend`.

    `batch_size` bounds encoder rows and decoder rows per forward pass; `deterministic=True` runs each
    context and each continuation (each generation request) alone, so results are bit-identical for
    any batch size. `max_length` bounds the encoder input and each continuation (lm-eval's rule:
    config positions, else the tokenizer's `model_max_length`, else 2048).
    """

    model_kind = "seq2seq"  # read by lm-eval's `LM` adapter, which encodes pairs as HFLM's seq2seq does

    def __init__(self, model: Any, tokenizer: Any, max_length: int | None = None, **kwargs: Any):
        super().__init__(
            model, tokenizer, max_length=max_length or _context_limit(model, tokenizer), **kwargs
        )
        config = model.config
        self.decoder_start = _first_not_none(
            getattr(config, "decoder_start_token_id", None),
            getattr(config, "pad_token_id", None),
            self.pad_id,
        )

    @staticmethod
    def _load_model(path: str, dtype: Any) -> Any:
        """`HFBackend.from_pretrained` loads an encoder-decoder here (adapter check, device and tokenizer
        as for the causal backend)."""
        from ...models.loading import load_seq2seq_lm

        return load_seq2seq_lm(path, dtype=dtype)

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The encoder input training gave this chat (`data.seq2seq.to_pair`: system texts and the one
        user turn joined by a blank line), not a chat template: the `chat` prompt style then scores the
        bare reply as the target, exactly as the model was tuned. Several user turns are refused."""
        from ...data.seq2seq import PairError, to_pair

        try:
            return to_pair([*messages, {"role": "assistant", "content": ""}])[0]
        except PairError as exc:
            raise InstructkitError(
                f"encoder-decoder prompt: {exc} (use --prompt-style chat or base)"
            ) from exc

    # ---- tokenisation (lm-eval's seq2seq conventions) ----

    def encode(self, text: str) -> list[int]:
        """Encoder ids with the tokenizer's special tokens, unless the text already starts with the prefix
        token (BOS, else EOS), as lm-eval's `tok_encode`."""
        prefix = self.tokenizer.decode(_prefix_token(self.tokenizer))
        return self.tokenizer.encode(text, add_special_tokens=not (prefix and text.startswith(prefix)))

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(encoder ids, decoder target ids): encoded separately, the target without special tokens."""
        if not context:  # lm-eval: the prefix token (EOS for T5) is the whole encoder input
            cont = self.tokenizer.encode(continuation, add_special_tokens=False)
            prefix = _prefix_token(self.tokenizer)
            return ([prefix], cont) if prefix != cont[0] else (cont[:1], cont[1:])
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        return self.encode(context), self.tokenizer.encode(continuation, add_special_tokens=False)

    def _pair(self, req: Any) -> tuple[list[int], list[int]]:
        """Context and continuation each keep their last `max_length` tokens (the encoder's limit)."""
        ctx, cont = self.encode_pair(req.context, req.continuation)
        return ctx[-self.max_length :], cont[-self.max_length :]

    def _prompt(self, req: GenerationRequest) -> list[int]:
        """Encoder ids of the prompt (the tokenizer's special tokens), its last `max_length` tokens."""
        ids = list(req.prompt_ids) if req.prompt_ids else self.tokenizer.encode(req.prompt)
        return ids[-self.max_length :]

    # ---- loglikelihood ----

    @torch.inference_mode()
    def loglikelihood_tokens(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[Loglikelihood]:
        """Score (encoder ids, target ids) pairs: one encoder pass per distinct context, decoders batched."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, _) in enumerate(pairs):
            groups.setdefault(tuple(ctx), []).append(i)
        contexts = sorted(groups, key=lambda c: (-len(c), c))
        results: list[Loglikelihood | None] = [None] * len(pairs)
        for chunk in self._chunks([len(c) for c in contexts]):
            hidden, mask = self._encode([list(contexts[k]) for k in chunk])
            rows = [(n, i) for n, k in enumerate(chunk) for i in groups[contexts[k]]]
            rows.sort(key=lambda row: -len(pairs[row[1]][1]))
            for part in self._chunks([len(pairs[i][1]) for _, i in rows]):
                self._score_decoders([rows[p] for p in part], pairs, hidden, mask, results)
        return results  # type: ignore[return-value]

    def _chunks(self, lengths: list[int]) -> Iterator[list[int]]:
        """Consecutive indices (lengths descending) up to `batch_size` rows and `max_batch_tokens` tokens;
        one index at a time in deterministic mode."""
        rows = 1 if self.deterministic else self.batch_size
        chunk: list[int] = []
        for k, length in enumerate(lengths):
            width = max([lengths[j] for j in chunk] + [length])
            over = self.max_batch_tokens is not None and (len(chunk) + 1) * width > self.max_batch_tokens
            if chunk and (len(chunk) >= rows or over):
                yield chunk
                chunk = []
            chunk.append(k)
        if chunk:
            yield chunk

    def _encode(self, inputs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder hidden states and attention mask of right-padded inputs."""
        ids, mask, _ = self._right_pad(inputs)
        return self.model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state, mask

    def _score_decoders(
        self,
        rows: list[tuple[int, int]],
        pairs: Sequence[tuple[list[int], list[int]]],
        hidden: torch.Tensor,
        mask: torch.Tensor,
        results: list[Loglikelihood | None],
    ) -> None:
        """One decoder pass for `rows` (encoder row, request): each target after the decoder start."""
        conts = [pairs[i][1] for _, i in rows]
        dec_ids, _, _ = self._right_pad([[self.decoder_start, *c[:-1]] for c in conts])
        enc = torch.tensor([n for n, _ in rows], device=self.device)
        logits, _ = self._decoder_logits(hidden[enc], mask[enc], dec_ids, None, use_cache=False)
        for r, ((_, i), cont) in enumerate(zip(rows, conts)):
            results[i] = _continuation_score(logits[r, : len(cont)].float(), cont)

    def _decoder_logits(
        self, hidden: torch.Tensor, mask: torch.Tensor, dec_ids: torch.Tensor, cache: Any, use_cache: bool
    ) -> tuple[torch.Tensor, Any]:
        """Decoder logits over a precomputed encoder output, and the decoder's KV cache when `use_cache`
        (`cache`: the one the previous step returned, None at the first step)."""
        from transformers.modeling_outputs import BaseModelOutput

        out = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
            attention_mask=mask,
            decoder_input_ids=dec_ids,
            **({self._cache_kw: cache} if cache is not None else {}),
            use_cache=use_cache,
        )
        return out.logits, (cache_of(out) if use_cache else None)

    # ---- generation ----

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        """Decode every request; a batch holds up to `batch_size` sample rows, longest prompts first."""
        prompts = [self._prompt(r) for r in requests]
        results: list[list[Sample]] = [[] for _ in requests]
        if self.deterministic:
            batches = [[i] for i in range(len(requests))]
        else:
            batches = self._generation_batches(requests, prompts)
        for batch in batches:
            self._generate_batch_seq2seq(
                [requests[j] for j in batch], [prompts[j] for j in batch], results, batch
            )
        return results

    def _generate_batch_seq2seq(
        self,
        reqs: list[GenerationRequest],
        prompts: list[list[int]],
        results: list[list[Sample]],
        slots: list[int],
    ) -> None:
        """Encode the prompts once, repeat each output for its `n` samples, decode until all rows finish."""
        hidden, mask = self._encode(prompts)
        rows, decoder = Decoder.per_sample(self, reqs)
        decoder.follow_rules([[self.decoder_start]] * len(rows), self.generation_rules)
        idx = torch.tensor(rows, device=self.device)
        hidden, mask = hidden[idx], mask[idx]
        live = list(range(len(rows)))
        token = torch.full((len(rows),), self.decoder_start, dtype=torch.long, device=self.device)
        cache = None
        while True:
            logits, cache = self._decoder_logits(hidden, mask, token[:, None], cache, use_cache=True)
            token = decoder.step(logits[:, -1].float(), live)
            kept = decoder.drop_finished(live, cache, hidden, mask, token)
            if kept is None:
                break
            live, (hidden, mask, token) = kept
        for row, sample in enumerate(decoder.samples()):
            results[slots[rows[row]]].append(sample)


def _prefix_token(tokenizer: Any) -> int:
    """lm-eval's prefix token: BOS, else EOS (T5 has no BOS)."""
    return _first_not_none(tokenizer.bos_token_id, tokenizer.eos_token_id, 0)


def _context_limit(model: Any, tokenizer: Any) -> int:
    """lm-eval's `resolve_max_length`: config positions, else the tokenizer's limit, else 2048."""
    config = getattr(model.config, "text_config", None) or model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(config, attr, None) is not None:
            return int(getattr(config, attr))
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit is not None and limit != TOKENIZER_INFINITY else 2048
