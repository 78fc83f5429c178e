"""Decontamination: n-gram overlap with named evaluation sets removes rows and lists them in a report."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from instructkit.data.decontaminate import EvalIndex, ngrams, row_text, tokens
from instructkit.data.mixture import build_mixture
from instructkit.data.mixture_config import MixtureConfig

LONG = "the quick brown fox jumps over the lazy dog while the farmer watches from the old red barn"


def test_tokens_and_ngrams():
    assert tokens("Hello, World! 42") == ["hello", "world", "42"]
    assert len(ngrams(LONG, 13)) == len(tokens(LONG)) - 12
    assert ngrams("too short", 13) == {"too short"} and ngrams("", 13) == set()


def test_index_finds_overlapping_rows_only():
    index = EvalIndex(13)
    index.add("bench", [{"text": "Intro. " + LONG + " The end.", "_source": "bench.jsonl:7"}])
    rows = [{"q": LONG.upper()}, {"q": "something else entirely with many different words in it today ok"}]
    hits = index.find(rows)
    assert [(h.index, h.eval_set, h.eval_source) for h in hits] == [(0, "bench", "bench.jsonl:7")]


@given(
    st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta", "eps"]), min_size=13, max_size=40),
    st.integers(0, 20),
)
def test_any_shared_window_of_n_tokens_is_found(words, start):
    text = " ".join(words)
    window = " ".join(words[min(start, len(words) - 13) :][:13])
    index = EvalIndex(13)
    index.add("e", [{"t": "prefix words " + window + " suffix"}])
    assert index.find([{"t": text}])


def test_row_text_includes_numbers_and_messages_but_not_private_fields():
    text = row_text(
        {"a": 3, "flag": True, "msgs": [{"role": "user", "content": "hi"}], "_source": "f:1", "s": "x"}
    )
    assert text.split("\n") == ["3", "hi", "x"]


def test_build_removes_and_reports_contaminated_rows(tmp_path):
    (tmp_path / "train.jsonl").write_text(
        "".join(
            json.dumps({"q": LONG if i == 3 else f"question number {i}", "answer": str(i)}) + "\n"
            for i in range(10)
        )
    )
    (tmp_path / "eval.jsonl").write_text(json.dumps({"q": "Story: " + LONG, "answer": "x"}) + "\n")
    (tmp_path / "tasks.yaml").write_text(
        "defaults: {cluster: user, split_fractions: {train: 1.0, test: 0.0}, templates: [{id: a, input: '{{ q }}', target: '{{ answer }}'}]}\n"
        "tasks:\n  - {name: mytrain, source: {files: [train.jsonl]}}\n"
        "  - {name: myeval, eval_only: true, cluster: bench, source: {files: [eval.jsonl]}, split_fractions: {test: 1.0}}\n"
    )
    config = MixtureConfig.model_validate(
        {
            "tasks": ["mytrain"],
            "catalog": [str(tmp_path)],
            "decontaminate": {"eval_sets": ["myeval"], "n": 13},
        }
    )
    stats = build_mixture(config, tmp_path / "out")
    assert stats["removed_by_decontamination"] == 1 and stats["rows"] == 9
    report = [
        json.loads(line) for line in (tmp_path / "out" / "decontamination.jsonl").read_text().splitlines()
    ]
    assert report[0]["source"].endswith("train.jsonl:4") and report[0]["eval_set"] == "myeval"
    assert stats["tasks"]["mytrain"]["removed_by_decontamination"] == 1
