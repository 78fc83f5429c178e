"""Preference pairs: the three formats, bad rows named `file:row: field: reason`, masks on both sides
through the SFT masking code, one shared prompt, the length policy per side, and pairs packed whole."""

from __future__ import annotations

import json

import datasets
import pytest

from helpers.files import write_jsonl
from instructkit.data.conversation import ConversationError
from instructkit.data.converters import detect_input_format
from instructkit.data.preference import to_preference
from instructkit.data.preference_rows import _prompt_mismatch, prompt_length
from instructkit.data.prepare import PrepareConfig, prepare
from instructkit.data.tokenize import ChatTokenizer
from instructkit.errors import InstructkitError

PLAIN = {"prompt": "Add 2 and 3.", "chosen": "5", "rejected": "six"}
HH = {
    "chosen": "\n\nHuman: Hi.\n\nAssistant: Hello!\n\nHuman: Add 2 and 3.\n\nAssistant: 5",
    "rejected": "\n\nHuman: Hi.\n\nAssistant: Hello!\n\nHuman: Add 2 and 3.\n\nAssistant: I will not.",
}


def _turns(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def test_preference_columns_win_the_format_vote_even_beside_messages():
    assert detect_input_format(["prompt", "chosen", "rejected"]) == "preference"
    # UltraFeedback-binarized also carries `messages` (= chosen): still a pair
    assert detect_input_format(["prompt", "prompt_id", "chosen", "rejected", "messages"]) == "preference"
    assert detect_input_format(["chosen", "rejected"]) == "preference"


def test_plain_strings():
    pref = to_preference(PLAIN, "f.jsonl", 1)
    assert [(m.role, m.content) for m in pref.prompt] == [("user", "Add 2 and 3.")]
    assert [m.content for m in pref.chosen] == ["5"] and [m.content for m in pref.rejected] == ["six"]


def test_conversational_whole_conversations_split_at_the_last_assistant_turn():
    head = (("system", "Be brief."), ("user", "Hi."), ("assistant", "Hello!"), ("user", "2+3?"))
    row = {
        "prompt": "2+3?",
        "chosen": _turns(*head, ("assistant", "5")),
        "rejected": _turns(*head, ("assistant", "6")),
    }
    pref = to_preference(row, "f", 1)
    assert [(m.role, m.content) for m in pref.prompt] == list(head)
    assert [(m.role, m.content) for m in pref.chosen] == [("assistant", "5")]
    assert [(m.role, m.content) for m in pref.rejected] == [("assistant", "6")]


def test_conversational_prompt_list_with_reply_lists():
    row = {
        "prompt": _turns(("user", "2+3?")),
        "chosen": _turns(("assistant", "5")),
        "rejected": _turns(("assistant", "6")),
    }
    pref = to_preference(row, "f", 1)
    assert [m.content for m in pref.prompt] == ["2+3?"]
    assert [m.content for m in pref.chosen + pref.rejected] == ["5", "6"]


def test_hh_transcripts_split_at_the_last_assistant_turn():
    pref = to_preference(HH, "f", 1)
    assert [(m.role, m.content) for m in pref.prompt] == [
        ("user", "Hi."),
        ("assistant", "Hello!"),
        ("user", "Add 2 and 3."),
    ]
    assert pref.chosen[0].content == "5" and pref.rejected[0].content == "I will not."


@pytest.mark.parametrize(
    "row, field, words",
    [
        ({**HH, "rejected": HH["rejected"].replace("Add 2", "Add 9")}, "rejected", "prompt differs"),
        ({"prompt": "x", "chosen": 5, "rejected": "y"}, "chosen", "expected a string or a list"),
        ({"prompt": "x", "chosen": "a", "rejected": _turns(("assistant", "b"))}, "rejected", "both"),
        ({"chosen": "no transcript here", "rejected": "nor here"}, "chosen", "Human:"),
        ({"prompt": "x", "chosen": "", "rejected": "b"}, "chosen", "empty assistant content"),
    ],
)
def test_bad_pairs_name_the_field(row, field, words):
    with pytest.raises(ConversationError) as err:
        to_preference(row, "f", 1)
    assert err.value.field.split(":")[0].split("[")[0] == field
    assert words in err.value.reason


def _prepare(tmp_path, tokenizer_dir, rows, **kw):
    src = write_jsonl(tmp_path / "pairs.jsonl", rows)
    cfg = PrepareConfig(sources=[str(src)], out=str(tmp_path / "out"), tokenizer=tokenizer_dir, **kw)
    return str(src), prepare(cfg, progress=False), tmp_path / "out"


def test_prompts_that_differ_are_refused_naming_file_row_and_field(tmp_path, tokenizer_dir):
    bad = {**HH, "rejected": HH["rejected"].replace("Hi.", "Hey.")}
    with pytest.raises(InstructkitError) as err:
        _prepare(tmp_path, tokenizer_dir, [PLAIN, bad])
    assert f"{tmp_path / 'pairs.jsonl'}:2: rejected" in str(err.value)
    src, stats, out = _prepare(tmp_path, tokenizer_dir, [PLAIN, bad, HH], on_error="skip")
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["file"], r["row"], r["field"]) for r in rejects] == [(src, 2, "rejected")]
    assert stats["pairs"] == 2 and stats["rejected"] == 1


def test_both_sides_carry_the_sft_masks_and_share_the_prompt_ids(tmp_path, tokenizer_dir, tiny_tokenizer):
    _, stats, out = _prepare(tmp_path, tokenizer_dir, [PLAIN, HH], max_length=128)
    meta = json.loads((out / "prepare.json").read_text())
    assert meta["kind"] == "preference" and meta["packed"] is True
    ds = datasets.load_from_disk(str(out))
    chat_tok = ChatTokenizer(tiny_tokenizer, "tulu")
    expected = {}
    for row, pair in ((PLAIN, to_preference(PLAIN, "f", 1)), (HH, to_preference(HH, "f", 2))):
        for side, chat in zip((0, 1), pair.chats()):
            enc = chat_tok.encode([chat])[0]  # what SFT masking gives the same conversation
            expected[(row["chosen"], side)] = (enc.input_ids, [-100] + enc.labels[1:])
    seen = []
    for row in ds:
        start = 0
        for n, pair, side in zip(row["seq_lens"], row["pair_ids"], row["sides"]):
            ids, labels = row["input_ids"][start : start + n], row["labels"][start : start + n]
            assert row["position_ids"][start : start + n] == list(range(n))
            seen.append((pair, side, ids, labels))
            start += n
        assert start == len(row["input_ids"])
    assert sorted((p, s) for p, s, _, _ in seen) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    by_pair = {(p, s): (ids, labels) for p, s, ids, labels in seen}
    for p, row in enumerate((PLAIN, HH)):
        for side in (0, 1):
            assert by_pair[(p, side)] == expected[(row["chosen"], side)]
        (c_ids, c_labels), (r_ids, r_labels) = by_pair[(p, 0)], by_pair[(p, 1)]
        assert c_ids[: prompt_length(c_labels)] == r_ids[: prompt_length(r_labels)]
        reply = tiny_tokenizer.decode([t for t in c_labels if t != -100])
        assert reply.startswith(row["chosen"] if row is PLAIN else "5") and reply.endswith(
            tiny_tokenizer.eos_token
        )


def test_a_prompt_tokenized_differently_on_the_two_sides_is_refused():
    labels = [-100, -100, 7, 8]
    assert _prompt_mismatch(labels, [1, 2, 7, 8], labels, [1, 2, 9, 9]) is None
    err = _prompt_mismatch(labels, [1, 2, 7, 8], [-100, 5, 8], [1, 5, 8])
    assert err is not None and str(err).startswith("rejected: ") and "token 1" in str(err)


def test_a_pair_whose_reply_is_cut_away_is_dropped_and_counted(tmp_path, tokenizer_dir):
    long_prompt = {"prompt": "word " * 60, "chosen": "yes", "rejected": "no"}
    _, stats, out = _prepare(tmp_path, tokenizer_dir, [PLAIN, long_prompt], max_length=32)
    assert stats["dropped_truncated"] == 1 and stats["pairs"] == 1
    ds = datasets.load_from_disk(str(out))
    assert [p for row in ds for p in row["pair_ids"]] == [0, 0]
    _, stats, _ = _prepare(tmp_path, tokenizer_dir, [PLAIN, long_prompt], max_length=32, overlong="drop")
    assert stats["dropped_overlong"] == 1


def test_packing_keeps_pairs_whole_in_one_row(tmp_path, tokenizer_dir):
    rows = [
        {"prompt": f"Repeat {'7' * k}.", "chosen": "7" * k, "rejected": "8" * (k % 3 + 1)}
        for k in range(1, 13)
    ]
    _, stats, out = _prepare(tmp_path, tokenizer_dir, rows, max_length=40, pack=True)
    ds = datasets.load_from_disk(str(out))
    assert stats["packs"] == len(ds) < len(rows)
    placed = []
    for row in ds:
        assert len(row["input_ids"]) <= stats["pair_capacity"] == 80
        assert sum(row["seq_lens"]) == len(row["input_ids"])
        assert row["sides"] == [0, 1] * (len(row["sides"]) // 2)
        assert row["pair_ids"][0::2] == row["pair_ids"][1::2]
        placed += row["pair_ids"][0::2]
    assert sorted(placed) == list(range(len(rows)))


def test_sft_prepared_folders_have_no_pair_columns(tmp_path, tokenizer_dir):
    sft = {"messages": _turns(("user", "2+3?"), ("assistant", "5"))}
    _, _, out = _prepare(tmp_path, tokenizer_dir, [sft], pack=True)
    assert "kind" not in json.loads((out / "prepare.json").read_text())
    assert "pair_ids" not in datasets.load_from_disk(str(out)).column_names


def test_mixing_pairs_and_conversations_is_refused(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "a.jsonl", [PLAIN])
    write_jsonl(tmp_path / "b.jsonl", [{"messages": _turns(("user", "2+3?"), ("assistant", "5"))}])
    cfg = PrepareConfig(sources=[str(tmp_path)], out=str(tmp_path / "out"), tokenizer=tokenizer_dir)
    with pytest.raises(InstructkitError, match="mixes preference pairs"):
        prepare(cfg, progress=False)
