"""The published synthesizer format, byte for byte, and its tokenization (one BOS, stable boundary)."""

from __future__ import annotations

from instructkit.synth.markup import Pair, SynthFormat, encode, encode_example, encode_question

PAIRS = [Pair("Who wrote it?", "Ada"), Pair("When?", "In 1843.")]


def test_reading_block_is_byte_exact():
    assert SynthFormat().read("Raw text here.") == "<s> <CON> Raw text here. </CON>\n\n"


def test_pairs_and_example_are_byte_exact():
    fmt = SynthFormat()
    assert fmt.pairs(PAIRS) == "<QUE> Who wrote it? <ANS> Ada </END>\n\n<QUE> When? <ANS> In 1843. </END>"
    assert fmt.example("T.", PAIRS) == (
        "<s> <CON> T. </CON>\n\n<QUE> Who wrote it? <ANS> Ada </END>\n\n<QUE> When? <ANS> In 1843. </END></s>"
    )


def test_question_prompt_ends_at_answer_marker():
    assert SynthFormat().question("T.", "Who?") == "<s> <CON> T. </CON>\n\n<QUE> Who? <ANS>"


def test_format_takes_the_tokenizers_bos_and_eos(tiny_tokenizer):
    assert SynthFormat.for_tokenizer(tiny_tokenizer) == SynthFormat("<s>", "</s>")


def test_bos_text_becomes_exactly_one_bos_token(tiny_tokenizer):
    ids = encode(tiny_tokenizer, SynthFormat.for_tokenizer(tiny_tokenizer).read("Alice went home."))
    assert ids[0] == tiny_tokenizer.bos_token_id
    assert ids.count(tiny_tokenizer.bos_token_id) == 1


def test_bos_is_not_doubled_by_a_tokenizer_that_adds_its_own(tiny_tokenizer):
    from tokenizers.processors import TemplateProcessing

    tok = tiny_tokenizer.__class__(
        tokenizer_object=tiny_tokenizer.backend_tokenizer.__class__.from_str(
            tiny_tokenizer.backend_tokenizer.to_str()
        ),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.convert_tokens_to_ids("<s>"))]
    )
    assert tok("hi")["input_ids"][0] == tok.bos_token_id  # it does add one on its own
    ids = encode(tok, SynthFormat.for_tokenizer(tok).read("hi"))
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


def test_example_ids_start_with_the_prompt_ids(tiny_tokenizer):
    fmt = SynthFormat.for_tokenizer(tiny_tokenizer)
    ids, read_len = encode_example(tiny_tokenizer, fmt, "Alice went to the market.", PAIRS)
    assert ids[:read_len] == encode(tiny_tokenizer, fmt.read("Alice went to the market."))
    assert ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(ids) == fmt.example("Alice went to the market.", PAIRS)


def test_question_ids_decode_to_the_question_prompt(tiny_tokenizer):
    fmt = SynthFormat.for_tokenizer(tiny_tokenizer)
    ids = encode_question(tiny_tokenizer, fmt, "Alice went home.", "Where did Alice go?")
    assert tiny_tokenizer.decode(ids) == fmt.question("Alice went home.", "Where did Alice go?")
    assert ids[: len(encode(tiny_tokenizer, fmt.read("Alice went home.")))] == encode(
        tiny_tokenizer, fmt.read("Alice went home.")
    )
