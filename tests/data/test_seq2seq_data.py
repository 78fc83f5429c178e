"""Encoder-decoder (seq2seq) data: kind detection, the tiny T5 preset and its tokenizer, conversations
to (input, target) pairs, and `data prepare` writing encoder ids and decoder labels under two limits."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from helpers.seq2seq import pair_rows, prepare_pairs
from instructkit.data.prepare import prepare
from instructkit.data.prepare_config import PrepareConfig
from instructkit.data.seq2seq import PairError, to_pair
from instructkit.errors import InstructkitError
from instructkit.models.loading import load_model, model_kind, model_kind_of
from instructkit.models.tiny import tiny_tokenizer


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def t5_tokenizer():
    return tiny_tokenizer("tiny:t5-nano", ["What is 12 plus 34? Think. 46"] * 20)


def test_the_tiny_t5_tokenizer_has_pad_and_eos_appended_and_no_bos(t5_tokenizer):
    ids = t5_tokenizer("What is 1 plus 2?").input_ids
    assert t5_tokenizer.bos_token_id is None
    assert (t5_tokenizer.pad_token_id, t5_tokenizer.eos_token_id) == (0, 1)
    assert ids[-1] == t5_tokenizer.eos_token_id and ids.count(t5_tokenizer.eos_token_id) == 1
    assert t5_tokenizer.chat_template is None


def test_kind_is_read_from_the_config_in_one_place(t5_tokenizer):
    model = load_model("tiny:t5-nano", t5_tokenizer)
    assert type(model).__name__ == "T5ForConditionalGeneration"
    assert model_kind(model.config) == "seq2seq" and model.config.decoder_start_token_id == 0
    assert model_kind_of("tiny:t5-nano") == "seq2seq" and model_kind_of("tiny:nano") == "causal"


def test_a_saved_encoder_decoder_folder_is_detected_and_loaded_as_seq2seq(t5_tokenizer, tmp_path):
    model = load_model("tiny:t5-nano", t5_tokenizer)
    model.save_pretrained(tmp_path / "t5")
    t5_tokenizer.save_pretrained(tmp_path / "t5")
    assert model_kind_of(str(tmp_path / "t5")) == "seq2seq"
    loaded = load_model(str(tmp_path / "t5"))
    assert type(loaded).__name__ == "T5ForConditionalGeneration"


def test_a_pair_is_system_texts_and_the_user_turn_then_the_reply():
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q?"},
        {"role": "assistant", "content": "A."},
    ]
    assert to_pair(msgs) == ("Be brief.\n\nQ?", "A.")


@pytest.mark.parametrize(
    "roles, where",
    [
        (["user", "assistant", "user", "assistant"], "messages[2] (user)"),
        (["user", "user", "assistant"], "messages[1] (user)"),
        (["user"], "messages"),
    ],
)
def test_anything_but_one_user_turn_and_one_reply_is_refused_naming_the_turn(roles, where):
    msgs = [{"role": r, "content": "x"} for r in roles]
    with pytest.raises(PairError, match=r"one user turn and one assistant reply") as err:
        to_pair(msgs)
    assert str(err.value).startswith(where)


def test_prepare_writes_encoder_ids_and_decoder_labels_exactly(tmp_path, t5_tokenizer):
    rows = pair_rows(12)
    stats, out = prepare_pairs(tmp_path, rows)
    meta = json.loads((out / "prepare.json").read_text())
    assert meta["model_kind"] == "seq2seq" and (meta["max_source_length"], meta["max_target_length"]) == (
        64,
        64,
    )
    assert meta["chat_template"] is None
    ds = datasets.load_from_disk(str(out))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    assert tok.chat_template is None  # no template is saved for train or eval to render with
    for row, rec in zip(ds, rows):
        user, reply = (m["content"] for m in rec["messages"])
        assert row["input_ids"] == tok(user).input_ids
        assert row["labels"] == tok(reply).input_ids  # every target token trained, eos included
    assert stats["trainable_tokens"] == stats["target_tokens"] == sum(len(r["labels"]) for r in ds)


def test_the_two_length_limits_cut_input_and_target_separately_and_are_counted(tmp_path):
    rows = pair_rows(16)
    rows[0]["messages"][1]["content"] = "one two three four five six seven eight nine ten"
    stats, out = prepare_pairs(tmp_path, rows, max_source_length=16, max_target_length=4)
    ds = datasets.load_from_disk(str(out))
    assert max(len(r["input_ids"]) for r in ds) == 16 and max(len(r["labels"]) for r in ds) == 4
    assert all(r["input_ids"][-1] == 1 and r["labels"][-1] == 1 for r in ds)  # eos kept at the cut
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    over = [
        len(tok(r["messages"][0]["content"]).input_ids) > 16
        or len(tok(r["messages"][1]["content"]).input_ids) > 4
        for r in rows
    ]
    assert stats["truncated"] == sum(over) > 0 and not all(over)
    cut = [row for row, o in zip(ds, over) if o]
    assert all(len(r["input_ids"]) == 16 or len(r["labels"]) == 4 for r in cut)
    dropped, _ = prepare_pairs(
        tmp_path / "d", rows, max_source_length=16, max_target_length=4, overlong="drop"
    )
    assert dropped["dropped_overlong"] == stats["truncated"]
    assert dropped["examples_out"] == len(rows) - stats["truncated"]


def test_multi_turn_rows_are_rejected_with_file_row_and_turn(tmp_path):
    rows = pair_rows(4)
    rows.append({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 2})
    with pytest.raises(InstructkitError, match=r"pairs.jsonl.*5.*messages\[2\] \(user\)"):
        prepare_pairs(tmp_path, rows)
    stats, out = prepare_pairs(tmp_path / "skip", rows, on_error="skip")
    reject = json.loads((out / "rejects.jsonl").read_text())
    assert (reject["row"], stats["rejected"], stats["examples_out"]) == (5, 1, 4)
    assert "messages[2] (user)" in reject["reason"]


def test_settings_without_meaning_for_pairs_are_refused(tmp_path):
    with pytest.raises(InstructkitError, match="without a chat template"):
        prepare_pairs(tmp_path, pair_rows(2), chat_template="tulu")
    with pytest.raises(InstructkitError, match="loss-on all"):
        prepare_pairs(tmp_path, pair_rows(2), loss_on="all")


def test_causal_prepare_json_records_no_seq2seq_setting(tmp_path):
    """Adding the seq2seq fields changed nothing a causal prepared folder records."""
    _, out = prepare_pairs(tmp_path, pair_rows(4), tokenizer="tiny:nano")
    meta = json.loads((out / "prepare.json").read_text())
    assert not {"model_kind", "max_source_length", "max_target_length"} & set(meta)
    ds = datasets.load_from_disk(str(out))
    assert len(ds[0]["input_ids"]) == len(ds[0]["labels"])


def test_a_rendered_mixture_prepares_as_pairs_in_its_formats(tmp_path):
    """Tasks, templates and formats (zero-shot, few-shot, CoT) render one prompt and one target: each
    row becomes an (input, target) pair with the prompt as input and the target as labels."""
    from instructkit.data.mixture import build_mixture
    from instructkit.data.mixture_config import MixtureConfig

    config = MixtureConfig.model_validate(
        {
            "name": "t",
            "seed": 7,
            "tasks": [{"cluster": "arithmetic"}, {"cluster": "list_ops"}],
            "rate": {"cap": 12},
            "formats": {"zero_shot": 0.4, "few_shot": 0.3, "cot": 0.3},
        }
    )
    build_mixture(config, tmp_path / "mix")
    rendered = datasets.load_from_disk(str(tmp_path / "mix"))
    assert {"zero_shot", "few_shot"} <= set(rendered["format"])  # CoT where a task has rationales
    out = tmp_path / "prepared"
    stats = prepare(
        PrepareConfig(
            sources=[str(tmp_path / "mix")], out=str(out), tokenizer="tiny:t5-nano", max_length=1024
        ),
        progress=False,
    )
    assert stats["rejected"] == 0 and stats["examples_out"] == len(rendered)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    for row, conv in zip(datasets.load_from_disk(str(out)), rendered):
        prompt, target = (m["content"] for m in conv["messages"])
        assert row["input_ids"] == tok(prompt).input_ids and row["labels"] == tok(target).input_ids
