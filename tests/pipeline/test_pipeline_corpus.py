"""`instructkit run` with a `corpus` stage: raw texts → (augmented) corpus → prepare → pretrain → held-out QA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.paths import REPO
from instructkit.errors import InstructkitError
from instructkit.pipeline.recipe import load_recipe
from instructkit.pipeline.runner import build_pipeline

RECIPE = "src/instructkit/recipes/ablations/instruction_pretrain.yaml"
TINY = {
    "corpus.texts": "16",
    "corpus.heldout": "4",
    "corpus.max_length": "128",
    "prepare.tokenizer": "tiny:nano",
    "prepare.max_length": "128",
    "train.model": "tiny:nano",
    "train.max_steps": "4",
    "train.micro_batch_size": "2",
    "train.progress": "false",
    "evaluate.sets": "[{name: heldout_qa, kind: heldout_qa, limit: 6}]",
}


def recipe_at(tmp_path: Path, **extra: str):
    root = REPO
    return load_recipe(root / RECIPE, {"runs_dir": str(tmp_path), **TINY, **extra})[0]


def digests(recipe) -> dict[str, str]:
    return {row.stage: row.digest for row in build_pipeline(recipe).plan()}


def test_augment_changes_the_corpus_and_every_stage_after_it(tmp_path):
    plain = digests(recipe_at(tmp_path, **{"corpus.augment": "false"}))
    augmented = digests(recipe_at(tmp_path, **{"corpus.augment": "true"}))
    assert list(plain) == ["corpus", "prepare", "train", "eval-tuned", "report"]
    assert list(augmented) == ["synthesizer", *plain]
    assert all(plain[s] != augmented[s] for s in plain)


def test_synthesizer_settings_do_not_touch_a_plain_corpus(tmp_path):
    plain = {"corpus.augment": "false"}
    assert digests(recipe_at(tmp_path, **plain)) == digests(
        recipe_at(tmp_path, **plain, **{"corpus.size": "test", "corpus.rounds": "3"})
    )


def test_heldout_qa_needs_a_corpus_and_zero_shot(tmp_path):
    with pytest.raises(InstructkitError, match="heldout_qa needs `corpus` and k_shot"):
        recipe_at(tmp_path, **{"evaluate.sets": "[{name: q, kind: heldout_qa, k_shot: [1]}]"})
    with pytest.raises(InstructkitError, match="loss_on must be `all`"):
        recipe_at(tmp_path, **{"prepare.loss_on": "assistant"})


def test_plain_corpus_holds_every_text_and_asks_about_the_held_out_ones(tmp_path):
    from instructkit.evaluate.recipe_sets import heldout_qa_task
    from instructkit.synth.pretrain_corpus import PretrainCorpusConfig, build_pretraining_corpus

    cfg = PretrainCorpusConfig(out=str(tmp_path), texts=10, heldout=3, augment=False, tokenizer="tiny:nano")
    stats = build_pretraining_corpus(cfg)
    assert stats["texts"] == 10 and stats["pairs"] == 0 and stats["heldout_texts"] == 3
    task = heldout_qa_task(tmp_path, "qa")
    assert len(task.docs) == stats["heldout_questions"] >= 6  # 2-4 questions per paragraph
    for doc in task.docs:
        text, question = doc.query.split("\n\nQuestion: ")
        assert question.endswith("?\nAnswer:") and doc.answers[0] in text
    with pytest.raises(InstructkitError, match="heldout must be between 0 and texts - 1"):
        build_pretraining_corpus(PretrainCorpusConfig(out=str(tmp_path), texts=3, heldout=3, augment=False))


def test_recipe_corpus_mixes_plain_text_and_hashes_its_file(tmp_path):
    from instructkit.synth.pretrain_corpus import PretrainCorpusConfig, build_pretraining_corpus

    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({"text": f"A plain line, number {i}."}) + "\n" for i in range(30)))
    extra = {"corpus.augment": "false", "corpus.plain": str(plain), "corpus.plain_ratio": "1.0"}
    before = digests(recipe_at(tmp_path, **extra))
    plain.write_text(plain.read_text() + json.dumps({"text": "One more."}) + "\n")
    assert digests(recipe_at(tmp_path, **extra))["corpus"] != before["corpus"]
    cfg = PretrainCorpusConfig(
        out=str(tmp_path / "c"), texts=6, heldout=1, augment=False, tokenizer="tiny:nano", max_length=64
    )
    stats = build_pretraining_corpus(cfg.model_copy(update={"plain": str(plain), "plain_ratio": 1.0}))
    assert stats["documents"]["plain"] == stats["documents"]["augmented"] > 0


@pytest.fixture
def quick_synthesizer(tmp_path) -> Path:
    """A tiny synthesizer trained for a few seconds: it writes well-formed pairs, answers mostly wrong."""
    from instructkit.synth import TrainDataConfig, make_training_data
    from instructkit.train.config import TrainConfig
    from instructkit.train.run import train

    data, model = tmp_path / "synth_data", tmp_path / "synth"
    sources = ["paragraphs:people:60", "paragraphs:towns:60"]
    make_training_data(
        TrainDataConfig(sources=sources, out=str(data), tokenizer="tiny:nano", max_length=128, max_shots=1)
    )
    config = TrainConfig(
        data=data,
        output_dir=model,
        model="tiny:nano",
        max_steps=60,
        micro_batch_size=16,
        gradient_accumulation_steps=1,
        learning_rate=3e-3,
        save_steps=1000,
        progress=False,
    )
    train(config)
    return model


@pytest.mark.slow
def test_both_corpora_pretrain_and_score_held_out_questions(tmp_path, quick_synthesizer):
    scores = {}
    for augment in ("false", "true"):
        extra = {"corpus.augment": augment, "corpus.synthesizer": str(quick_synthesizer)}
        recipe = recipe_at(tmp_path, name=f"arm-{augment}", **extra)
        records = build_pipeline(recipe).run(log=lambda _: None)
        assert records["train"]["summary"]["global_step"] == 4
        results = json.loads((tmp_path / f"arm-{augment}" / "eval-tuned" / "results.json").read_text())
        task = results["tasks"]["heldout_qa/heldout_qa"]
        assert task["n"] == 6 and task["metric"] == "f1" and set(task["metrics"]) >= {"em", "f1"}
        scores[augment] = results["clusters"]["heldout_qa/0-shot"]["score"]
        again: list[str] = []
        build_pipeline(recipe).run(log=again.append)
        assert all("cached" in line for line in again), again
    assert all(0.0 <= s <= 100.0 for s in scores.values())
    plain, augmented = (_corpus_summary(tmp_path / f"arm-{a}") for a in ("false", "true"))
    assert plain["templates"] == {"raw": 16} and plain["pairs"] == 0
    assert augmented["pairs"] > 0 and augmented["templates"]["raw"] >= 4
    _check_heldout_texts_never_reach_the_synthesizer(tmp_path / "arm-true" / "corpus")


def _corpus_summary(run: Path) -> dict:
    return json.loads((run / "corpus" / "stage.json").read_text())["summary"]


def _check_heldout_texts_never_reach_the_synthesizer(corpus: Path) -> None:
    """Held-out texts: not in the synthesizer's input, all in the corpus, the only source of questions."""
    import datasets

    held = {json.loads(line)["text"] for line in (corpus / "heldout_qa.jsonl").read_text().splitlines()}
    given = {json.loads(line)["text"] for line in (corpus / "raw.jsonl").read_text().splitlines()}
    text = "\n".join(datasets.load_from_disk(str(corpus / "corpus"))["text"])
    assert len(held) == 4 and len(given) == 12 and not held & given
    assert all(t in text for t in held | given)
