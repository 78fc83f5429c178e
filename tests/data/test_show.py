"""`data show`: multi-byte text decodes whole (not byte token by byte token), trained spans and packed
example boundaries stay marked, and a missing folder is one clear error."""

from __future__ import annotations

import datasets
import pytest
from rich.console import Console

from helpers.files import write_jsonl
from instructkit.data.prepare import PrepareConfig, prepare
from instructkit.data.prepared import IGNORE_INDEX
from instructkit.data.show import label_spans, show_rows, token_text
from instructkit.errors import InstructkitError

PROMPT = "Say hello in Hebrew, Chinese and emoji: "
REPLY = "שלום 你好世界 🎉👋🏽"


def _row(tokenizer, prompt: str, reply: str) -> dict:
    """One unpacked row: the prompt untrained, the reply trained."""
    p, r = tokenizer(prompt).input_ids, tokenizer(reply).input_ids
    return {"input_ids": p + r, "labels": [IGNORE_INDEX] * len(p) + r}


def _styled(text) -> list[tuple[str, str]]:
    """(substring, style) of each styled span of a rich Text."""
    return [(text.plain[s.start : s.end], str(s.style)) for s in text.spans]


def test_multibyte_reply_decodes_whole_on_a_byte_level_bpe(tiny_tokenizer):
    row = _row(tiny_tokenizer, PROMPT, REPLY)
    # the BPE never saw these characters: each one is several byte tokens, none decodable alone
    assert len(row["input_ids"]) > len(PROMPT + REPLY) // 2
    assert "\ufffd" in "".join(tiny_tokenizer.decode([t]) for t in row["input_ids"])
    text = token_text(tiny_tokenizer, row)
    assert text.plain == PROMPT + REPLY and "\ufffd" not in text.plain
    assert _styled(text) == [(PROMPT, "dim"), (REPLY, "green")]


def test_packed_examples_keep_their_boundary_marker(tiny_tokenizer):
    a, b = _row(tiny_tokenizer, "Q: ", "你好"), _row(tiny_tokenizer, "Q: ", "🎉")
    row = {
        "input_ids": a["input_ids"] + b["input_ids"],
        "labels": a["labels"] + b["labels"],
        "seq_lens": [len(a["input_ids"]), len(b["input_ids"])],
    }
    assert [trained for _, _, trained in label_spans(row)] == [False, True, False, True]
    assert token_text(tiny_tokenizer, row).plain == "Q: 你好 ‖ Q: 🎉"


def test_adjacent_trained_examples_are_split_at_the_pack_boundary(tiny_tokenizer):
    ids = tiny_tokenizer("ab").input_ids + tiny_tokenizer("cd").input_ids
    row = {"input_ids": ids, "labels": ids, "seq_lens": [len(ids) // 2, len(ids) - len(ids) // 2]}
    assert len(label_spans(row)) == 2 and " ‖ " in token_text(tiny_tokenizer, row).plain


def test_show_prints_a_prepared_row_with_its_multibyte_text(tiny_tokenizer, tmp_path):
    datasets.Dataset.from_list([_row(tiny_tokenizer, PROMPT, REPLY)]).save_to_disk(str(tmp_path / "d"))
    tiny_tokenizer.save_pretrained(str(tmp_path / "d" / "tokenizer"))
    console = Console(record=True, width=200)
    show_rows(tmp_path / "d", n=1, task=None, console=console)
    assert REPLY in console.export_text()


def test_missing_or_foreign_folder_is_one_clear_error(tmp_path):
    with pytest.raises(InstructkitError, match=r"nope: no such directory \(give a folder written by"):
        show_rows(tmp_path / "nope", n=1, task=None, console=Console())
    (tmp_path / "empty").mkdir()
    with pytest.raises(InstructkitError, match="empty: not a dataset folder"):
        show_rows(tmp_path / "empty", n=1, task=None, console=Console())


def test_prepared_pairs_show_prompt_chosen_and_rejected_per_pair(tmp_path, tokenizer_dir):
    rows = [
        {"prompt": "Add 2 and 3.", "chosen": "It is 5.", "rejected": "It is six."},
        {"prompt": "Add 4 and 4.", "chosen": "It is 8.", "rejected": "Nine."},
    ]
    src = write_jsonl(tmp_path / "pairs.jsonl", rows)
    cfg = PrepareConfig(sources=[str(src)], out=str(tmp_path / "out"), tokenizer=tokenizer_dir, pack=True)
    prepare(cfg, progress=False)
    assert len(datasets.load_from_disk(str(tmp_path / "out"))) == 1  # both pairs packed into one row
    console = Console(record=True, width=200, color_system="truecolor")
    show_rows(tmp_path / "out", n=5, task=None, console=console)
    text = console.export_text(clear=False)
    assert text.count("prompt: ") == 2 and text.count("chosen: ") == 2 and text.count("rejected: ") == 2
    for row in rows:  # each pair's own replies, after its own prompt
        block = text[text.index(row["prompt"]) :]
        assert block.index(row["chosen"]) < block.index("rejected: ") < block.index(row["rejected"])
    # the trained reply text is coloured by side (green chosen, red rejected), the prompt is not
    html = console.export_html(inline_styles=True)
    assert "It is 5." in html and "#008000" in html and "#800000" in html
    shown = Console(record=True, width=200)
    show_rows(tmp_path / "out", n=1, task=None, console=shown)
    assert shown.export_text().count("prompt: ") == 1
