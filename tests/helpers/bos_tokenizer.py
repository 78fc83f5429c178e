"""A Llama/Mistral-style tokenizer trained here: SentencePiece-like BPE (▁ word marks, byte fallback)
whose encoding adds `<s>`, unlike the byte-level tiny tokenizer, which adds nothing."""

from __future__ import annotations

from collections.abc import Iterable


def train_bos_tokenizer(texts: Iterable[str], vocab_size: int = 512, chat_template: str = "tulu"):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from instructkit.models.tiny import BUILTIN_TEMPLATES

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], initial_alphabet=bytes_
    )
    tok.train_from_iterator(list(texts), trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.chat_template = BUILTIN_TEMPLATES[chat_template]
    return fast
