"""`synth pairs --task catalog/NAME:templates=x`: one template named alone is one task (not one per
character), on the split asked for, with the extractor given, so "Tom has 7 apples." is right for 7."""

from __future__ import annotations

from instructkit.evaluate.extract import get_extractor
from instructkit.evaluate.scoring import answer_correct
from instructkit.evaluate.suites.registry import parse_task_spec
from instructkit.synth.pairs import load_exact_task
from instructkit.synth.pairs_config import PairsConfig


def test_a_single_template_is_a_list_for_catalog_specs_only():
    assert parse_task_spec("catalog/arithmetic_add:templates=add_1")["templates"] == ["add_1"]
    assert parse_task_spec("catalog/arithmetic_add:templates=add_1|add_2")["templates"] == ["add_1", "add_2"]
    assert parse_task_spec("gsm8k:templates=x")["templates"] == "x"  # benchmarks keep their own options


def test_a_catalog_spec_gives_one_task_on_its_split_with_the_extractor(tmp_path):
    spec = "catalog/multistep_add_subtract:split=train,templates=as_1,extractor=last_number"
    task = load_exact_task(PairsConfig(model="unused", out=str(tmp_path), task=spec, limit=5))
    assert task.name == "multistep_add_subtract/as_1" and task.extractor == "last_number"
    assert len(task.docs) == 5 and all(d.query.startswith("What is ") for d in task.docs)
    test = load_exact_task(PairsConfig(model="unused", out=str(tmp_path), task=spec.replace("train", "test")))
    assert not {d.query for d in test.docs} & {d.query for d in task.docs}  # train and test are disjoint
    doc = task.docs[0]
    gold = doc.answers[0]
    assert answer_correct(doc, get_extractor(task.extractor)(f"Tom has {gold} apples."))
    assert not answer_correct(doc, get_extractor(task.extractor)(f"Tom has {int(gold) + 1} apples."))
