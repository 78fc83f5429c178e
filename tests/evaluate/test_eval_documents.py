"""One evaluation-set path: the task layer's `EvalDocument` (query, target delimiter, options, gold) is
exactly what the catalog's EvalDocs are made of, and the pinned prompts below are the ones evaluated
before the document was typed (byte for byte: same queries, same choices, same gold indices)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructkit.data.tasks import EvalDocument, eval_examples, load_catalog, load_task_file
from instructkit.errors import InstructkitError
from instructkit.evaluate.catalog_tasks import catalog_eval_tasks


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def first_document(task, **kwargs) -> EvalDocument:
    return eval_examples(task, limit=1, **kwargs)[0].document


def test_few_shot_prompts_end_with_the_delimiters_answer_cue_and_the_reply_follows_a_space(catalog):
    doc = first_document(catalog["compare_larger"], k_shot=2)
    assert doc == EvalDocument(
        query="Q: Of the numbers 7 and 89, say the maximum.\n\nOPTIONS:\n- 7\n- 89\nA: 89\n\n"
        "Q: Of the numbers 58 and 3, say the maximum.\n\nOPTIONS:\n- 58\n- 3\nA: 58\n\n"
        "Q: Of the numbers 12 and 3, say the maximum.\n\nOPTIONS:\n- 12\n- 3\nA:",
        target_delimiter=" ",
        options=("12", "3"),
        gold=0,
    )


def test_zero_shot_replies_start_on_a_new_line_unless_the_template_ends_with_a_cue(catalog):
    assert first_document(catalog["compare_larger"]) == EvalDocument(
        "Of the numbers 12 and 3, say the maximum.\n\nOPTIONS:\n- 12\n- 3\n", "", ("12", "3"), 0
    )
    letter = catalog["string_first_letter"]
    assert first_document(letter) == EvalDocument(
        "Give the initial letter of the word pugabe.\n", "", None, None
    )
    assert first_document(letter, template_ids=["first_2"]) == EvalDocument(
        "First letter of pugabe:", " ", None, None
    )


def test_an_appended_options_block_ends_the_prompt_even_after_a_template_cue(catalog):
    task = catalog["sentiment_product_review"]
    shown = first_document(task, template_ids=["prod_3"])
    hidden = first_document(task, template_ids=["prod_3"], with_options=False)
    assert shown.query.endswith("Sentiment:\n\nOPTIONS:\n- positive\n- negative\n")
    assert shown.target_delimiter == "" and shown.options == ("positive", "negative")
    assert hidden.query.endswith("\nSentiment:") and hidden.target_delimiter == " "
    assert hidden.gold == shown.gold == hidden.options.index(eval_examples(task, limit=1)[0].answer)


def test_cot_queries_end_with_the_trigger_zero_shot_and_with_the_cue_few_shot(catalog):
    task = catalog["multistep_three_sum"]
    assert first_document(task, cot=True) == EvalDocument(
        "Find the total of 7, 13 and 4.\nLet's think step by step.\n", "", None, None
    )
    few = first_document(task, cot=True, k_shot=1)
    assert few.query.endswith("Q: Find the total of 7, 13 and 4.\nLet's think step by step.\nA:")
    assert few.target_delimiter == " " and "So the answer is 27." in few.query


def write_user_task(tmp_path: Path) -> Path:
    rows = [{"q": f"{a} plus 2", "answer": str(a + 2), "choices": [str(a + 3), str(a + 2)]} for a in range(6)]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "tasks.yaml").write_text(
        """tasks:
  - name: user_sum
    cluster: user
    source: {files: [rows.jsonl]}
    options_field: choices
    templates:
      - {id: placed_cue, input: "{{ options_ }}\\n\\nCompute {{ q }}\\nAnswer:", target: "{{ answer }}"}
      - {id: placed_last, input: "Compute {{ q }}.\\n{{ options_ }}", target: "{{ answer }}"}
      - {id: worded, input: "Compute {{ q }}.", target: "It is {{ answer }}"}
      - {id: inv, input: "Write a sum equal to {{ answer }}:", target: "{{ q }}", inverted: true}
"""
    )
    return tmp_path / "tasks.yaml"


def test_template_placed_options_keep_the_templates_own_ending_and_gold_falls_back_to_the_answer(tmp_path):
    (task,) = load_task_file(write_user_task(tmp_path))
    docs = {
        tid: first_document(task, template_ids=[tid], root=tmp_path)
        for tid in ("placed_cue", "placed_last", "worded", "inv")
    }
    # the test split holds the row "1 plus 2" (options 4, 3; answer 3)
    assert docs["placed_cue"] == EvalDocument(
        "OPTIONS:\n- 4\n- 3\n\nCompute 1 plus 2\nAnswer:", " ", ("4", "3"), 1
    )
    assert docs["placed_last"] == EvalDocument("Compute 1 plus 2.\nOPTIONS:\n- 4\n- 3\n", "", ("4", "3"), 1)
    assert docs["worded"].gold == 1  # the target "It is 3" is no option; the raw answer "3" is
    assert docs["inv"] == EvalDocument("Write a sum equal to 3:", " ", None, None)  # inverted: no options


def test_catalog_eval_docs_are_the_task_layers_documents_unchanged(catalog, tmp_path):
    """The evaluate adapter adds ids and answers; query, choices and gold come from the document."""
    (user,) = load_task_file(write_user_task(tmp_path))
    cases = [
        (catalog["compare_larger"], {"k_shot": 2}),
        (catalog["sentiment_product_review"], {"with_options": False}),
        (catalog["string_first_letter"], {"template_ids": ["first_2"]}),
        (user, {"template_ids": ["placed_cue", "worded", "inv"], "root": tmp_path}),
    ]
    for task, kwargs in cases:
        examples = eval_examples(task, limit=4, **kwargs)
        evaluated = catalog_eval_tasks([task], limit=4, **kwargs)
        docs = [d for t in evaluated for d in t.docs]
        assert len(docs) == len(examples)
        for (
            ex,
            doc,
        ) in zip(examples, docs):
            parts = ex.document
            assert doc.query == parts.query and doc.id == f"{ex.task}/{ex.template_id}/{ex.row_id}"
            if doc.choices is not None:
                assert doc.choices == [parts.target_delimiter + o for o in parts.options]
                assert doc.gold == parts.gold and doc.answers == [ex.target]
            else:
                assert doc.answers == list(dict.fromkeys([ex.target, ex.answer]))
    methods = {
        t.name: t.method for t in catalog_eval_tasks([user], template_ids=["worded", "inv"], root=tmp_path)
    }
    assert methods == {"user_sum/worded": "multiple_choice", "user_sum/inv": "generate"}


def test_pinned_catalog_eval_docs(catalog):
    """Two EvalDocs pinned whole: what the model is asked and scored on, as before the refactor."""
    (mc,) = catalog_eval_tasks(["compare_larger"], k_shot=2, limit=1)
    assert (mc.method, mc.metric, mc.target_delimiter, mc.random_baseline) == (
        "multiple_choice",
        "acc",
        "",
        50.0,
    )
    doc = mc.docs[0]
    assert doc.query.endswith("Q: Of the numbers 12 and 3, say the maximum.\n\nOPTIONS:\n- 12\n- 3\nA:")
    assert (doc.choices, doc.gold, doc.answers) == ([" 12", " 3"], 0, ["12"])
    (gen,) = catalog_eval_tasks([catalog["string_first_letter"]], template_ids=["first_2"], limit=1)
    assert (gen.method, gen.metric, gen.stop) == ("generate", "em", ("\n",))
    assert (gen.docs[0].query, gen.docs[0].choices, gen.docs[0].answers) == (
        "First letter of pugabe:",
        None,
        ["p"],
    )


def test_an_unknown_catalog_task_name_is_a_clear_error():
    with pytest.raises(InstructkitError, match="unknown catalog task 'no_such_task'"):
        catalog_eval_tasks(["no_such_task"])
