"""`instructkit eval run --lm-eval-tasks`: lm-eval's own tasks through instructkit's runner give per-row
records whose mean is lm-eval's aggregate, so the report's intervals and paired tests apply; unknown
names and hub-only data offline stop with one clear line."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is in the `test` extra")

from typer.testing import CliRunner  # noqa: E402

from helpers.lm_eval_parity import same_value
from helpers.paths import FIXTURES_ROOT
from instructkit.cli.app import app  # noqa: E402
from instructkit.errors import HubUnreachableError, InstructkitError  # noqa: E402
from instructkit.evaluate.lm_eval_local import local_task_dir  # noqa: E402

FIXTURES = FIXTURES_ROOT / "lm_eval"
LIMIT = "6"


@pytest.fixture(scope="module", autouse=True)
def _quiet():
    logging.getLogger("lm_eval").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def fixture_tasks(tmp_path_factory) -> Path:
    """Task YAMLs (official definitions over tests/fixtures/lm_eval rows) for --lm-eval-include."""
    folder = tmp_path_factory.mktemp("fixture_tasks")
    written = local_task_dir(tmp_path_factory.mktemp("no_data"), folder, fixtures=FIXTURES)
    assert "arc_easy" in written
    return folder


def _run(model: Path, out: Path, *options: str):
    args = ["eval", "run", "--model", str(model), "--out", str(out), "--limit", LIMIT, "--batch-size", "4"]
    return CliRunner().invoke(app, [*args, *options])


def _rows(out: Path, task: str, metric: str) -> list[float]:
    path = out / "samples" / (task.replace("/", "__") + ".jsonl")
    return [float(json.loads(line)[metric]) for line in path.read_text().splitlines()]


def test_lm_eval_tasks_per_row_scores_match_lm_eval(saved_tiny_model, shared_data, fixture_tasks, tmp_path):
    out = tmp_path / "run"
    done = _run(
        saved_tiny_model,
        out,
        "--lm-eval-tasks",
        "piqa,arc_easy",
        "--lm-eval-include",
        str(fixture_tasks),
        "--data-dir",
        str(shared_data),
    )
    assert done.exit_code == 0, done.output
    results = json.loads((out / "results.json").read_text())
    for task in ("lm_eval/piqa", "lm_eval/arc_easy"):
        summary = results["tasks"][task]
        assert summary["n"] == int(LIMIT)
        assert summary["metric"] == "acc"
        assert summary["random_baseline"] > 0
        for metric in ("acc", "acc_norm"):
            rows = _rows(out, task, metric)
            assert len(rows) == int(LIMIT)
            aggregate = summary["lm_eval"][f"{metric},none"]
            assert math.isclose(sum(rows) / len(rows), aggregate, abs_tol=1e-9)
            assert math.isclose(summary["metrics"][metric], 100 * aggregate, abs_tol=1e-9)
        assert summary["ci95"][0] <= summary["score"] <= summary["ci95"][1]

    # the same run twice: report renders, and compare pairs the rows (same doc ids)
    again = tmp_path / "again"
    done = _run(
        saved_tiny_model, again, "--lm-eval-tasks", "arc_easy", "--lm-eval-include", str(fixture_tasks)
    )
    assert done.exit_code == 0, done.output
    report = CliRunner().invoke(app, ["eval", "report", str(out), str(again)])
    assert report.exit_code == 0, report.output
    assert "lm_eval/arc_easy" in report.output
    compare = CliRunner().invoke(app, ["eval", "compare", str(out), str(again)])
    assert compare.exit_code == 0, compare.output
    assert "lm_eval/arc_easy" in compare.output


def test_unknown_lm_eval_task_is_one_clear_line(saved_tiny_model, tmp_path):
    done = _run(saved_tiny_model, tmp_path / "run", "--lm-eval-tasks", "piqa,no_such_task_xyz")
    assert isinstance(done.exception, InstructkitError)
    message = str(done.exception)
    assert message.startswith("unknown lm-eval task(s) no_such_task_xyz:") and "\n" not in message


def test_hub_only_lm_eval_task_offline_gives_offline_error(saved_tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    done = _run(saved_tiny_model, tmp_path / "run", "--lm-eval-tasks", "arc_easy")
    assert isinstance(done.exception, HubUnreachableError), done.exception
    message = str(done.exception)
    assert message.startswith("cannot load lm-eval task data for 'arc_easy'")
    assert "offline" in message.lower()


def test_metrics_that_are_not_means_of_rows_keep_lm_eval_values():
    """IFEval's shape: prompt-level values are per-row bools (scored, × 100); instruction-level values
    are lists per row whose aggregate is no mean of rows (kept as lm-eval gives it, no interval)."""
    from instructkit.evaluate.lm_eval_tasks import task_records, task_summary

    metrics = ["prompt_level_strict_acc", "inst_level_strict_acc"]
    samples = [
        {"doc_id": 0, "filter": "none", "metrics": metrics, "resps": [["a"]], "filtered_resps": ["a"],
         "prompt_level_strict_acc": True, "inst_level_strict_acc": [True, False]},
        {"doc_id": 1, "filter": "none", "metrics": metrics, "resps": [["b"]], "filtered_resps": ["b"],
         "prompt_level_strict_acc": False, "inst_level_strict_acc": [False]},
    ]  # fmt: skip
    results = {"alias": "ifeval", "prompt_level_strict_acc,none": 0.5, "inst_level_strict_acc,none": 1 / 3}
    out = {"results": {"ifeval": results}, "configs": {"ifeval": {"output_type": "generate_until"}}}
    records = task_records(samples)
    summary = task_summary("ifeval", records, out, resamples=50, seed=0)
    assert [r["id"] for r in records] == ["0", "1"]
    assert summary["metric"] == "prompt_level_strict_acc" and summary["score"] == 50.0
    assert summary["metrics"]["inst_level_strict_acc"] == pytest.approx(1 / 3)
    assert summary["random_baseline"] == 0.0 and summary["n"] == 2


def test_lm_eval_requests_resume_from_the_request_cache(saved_tiny_model, shared_data, tmp_path):
    """A re-run into the same folder answers every lm-eval request from cache.sqlite with the same scores;
    the same requests on other weights are never served from it."""
    import shutil

    from helpers.chats import perturb_weights

    out = tmp_path / "run"
    options = ("--lm-eval-tasks", "piqa", "--data-dir", str(shared_data))
    first = _run(saved_tiny_model, out, *options)
    assert first.exit_code == 0, first.output
    before = json.loads((out / "results.json").read_text())
    assert before["cache"]["misses"] >= 2 * int(LIMIT) and before["cache"]["hits"] == 0
    rows_before = _rows(out, "lm_eval/piqa", "acc_norm")

    again = _run(saved_tiny_model, out, *options)
    assert again.exit_code == 0, again.output
    after = json.loads((out / "results.json").read_text())
    assert after["cache"] == {"hits": before["cache"]["misses"], "misses": 0}
    assert after["tasks"]["lm_eval/piqa"]["metrics"] == before["tasks"]["lm_eval/piqa"]["metrics"]
    assert _rows(out, "lm_eval/piqa", "acc_norm") == rows_before

    other = shutil.copytree(saved_tiny_model, tmp_path / "other")
    perturb_weights(other)
    changed = _run(other, out, *options)
    assert changed.exit_code == 0, changed.output
    assert json.loads((out / "results.json").read_text())["cache"]["hits"] == 0


def test_sampled_lm_eval_generations_are_never_cached():
    from instructkit.evaluate.lm_eval_cache import _sampled, request_key

    assert _sampled("generate_until", ("Q:", {"do_sample": True, "until": ["\n"]}))
    assert not _sampled("generate_until", ("Q:", {"until": ["\n"]}))
    assert not _sampled("loglikelihood", ("Q:", " A"))
    assert request_key("loglikelihood", ("Q:", " A")) != request_key("loglikelihood", ("Q:", " B"))
    assert request_key("loglikelihood", ("Q:", " A")) != request_key("loglikelihood_rolling", ("Q:", " A"))


def test_a_suite_entry_runs_an_lm_eval_task_beside_instructkit_benchmarks(
    saved_tiny_model, shared_data, fixture_tasks, tmp_path
):
    """`{lm_eval: NAME, include: FOLDER}` in a suite YAML (FOLDER relative to the suite file) runs lm-eval's
    own definition through the same runner, beside the suite's own benchmarks."""
    import os

    suite = tmp_path / "suites" / "mixed.yaml"
    suite.parent.mkdir()
    include = os.path.relpath(fixture_tasks, suite.parent)
    suite.write_text(
        f"name: mixed\ntasks:\n  - {{benchmark: piqa}}\n  - {{lm_eval: arc_easy, include: {include}, num_fewshot: 1}}\n"
    )
    out = tmp_path / "run"
    done = _run(saved_tiny_model, out, "--suite", str(suite), "--data-dir", str(shared_data))
    assert done.exit_code == 0, done.output
    results = json.loads((out / "results.json").read_text())
    assert {"piqa", "lm_eval/arc_easy"} <= set(results["tasks"])
    assert results["tasks"]["lm_eval/arc_easy"]["n"] == int(LIMIT)
    assert results["tasks"]["lm_eval/arc_easy"]["num_fewshot"] == 1
    assert results["config"]["lm_eval_tasks"] == ["arc_easy:num_fewshot=1"]

    for entry, message in [
        ("{lm_eval: arc_easy, shots: 5}", "tasks[0]: an lm_eval entry takes only 'lm_eval', 'include', 'num_fewshot' (got shots)"),
        ("{lm_eval: arc_easy, num_fewshot: 1.5}", "tasks[0]: num_fewshot=1.5 must be a whole number >= 0"),
    ]:  # fmt: skip
        suite.write_text(f"name: bad\ntasks:\n  - {entry}\n")
        refused = _run(saved_tiny_model, tmp_path / "bad", "--suite", str(suite))
        assert refused.exit_code != 0
        assert message in str(refused.exception or refused.output)


@pytest.fixture(scope="module")
def chat_tasks(tmp_path_factory, shared_data) -> Path:
    """The local task YAMLs, and gsm8k_short: gsm8k's own definition with replies cut at 16 tokens."""
    folder = tmp_path_factory.mktemp("chat_tasks")
    local_task_dir(shared_data, folder, fixtures=FIXTURES)
    (folder / "gsm8k_short.yaml").write_text(
        f"include: {folder / 'gsm8k.yaml'}\ntask: gsm8k_short\ngeneration_kwargs:\n"
        '  until: ["Question:", "</s>", "<|im_end|>"]\n  do_sample: false\n  temperature: 0.0\n  max_gen_toks: 16\n'
    )
    return folder


@pytest.fixture(scope="module")
def chat_manager(chat_tasks):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(chat_tasks), include_defaults=False)


def _hf_records(model, tokenizer, manager, tasks: list[str], **flags) -> dict[str, list]:
    """lm-eval's `hf` model on `tasks` (2 docs, 2 shots), as instructkit's per-row records."""
    from lm_eval.models.huggingface import HFLM

    from instructkit.evaluate.lm_eval_model import run_lm_eval_tasks
    from instructkit.evaluate.lm_eval_tasks import task_records

    hf = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4)
    out = run_lm_eval_tasks(hf, tasks, task_manager=manager, limit=2, num_fewshot=2, **flags)
    prompt = out["samples"][tasks[-1]][0]["arguments"][0][0]
    assert prompt.count("<|user|>") == (
        3 if flags["fewshot_as_multiturn"] else 1
    )  # 2 shots as turns, or none
    return {task: task_records(out["samples"][task]) for task in tasks}


def test_prompt_style_chat_multiturn_equals_lm_eval_apply_chat_template(
    saved_tiny_model, tiny_model, tiny_tokenizer, chat_tasks, chat_manager, tmp_path
):
    """`eval run --prompt-style chat_multiturn` is `lm_eval --apply_chat_template` (exemplars as
    user/assistant turns): every record equals HFLM's with those flags, per-task shots included."""
    out, tasks = tmp_path / "run", ["arc_easy", "gsm8k_short"]
    specs = "arc_easy:num_fewshot=2,gsm8k_short:num_fewshot=2"
    options = ["--limit", "2", "--lm-eval-include", str(chat_tasks), "--lm-eval-tasks", specs]
    chat = _run(saved_tiny_model, out, *options, "--prompt-style", "chat_multiturn")
    assert chat.exit_code == 0, chat.output
    results = json.loads((out / "results.json").read_text())
    flags = {"apply_chat_template": True, "fewshot_as_multiturn": True}
    theirs = _hf_records(tiny_model, tiny_tokenizer, chat_manager, tasks, **flags)
    for task in tasks:
        assert results["tasks"][f"lm_eval/{task}"]["num_fewshot"] == 2
        path = out / "samples" / f"lm_eval__{task}.jsonl"
        mine = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(mine) == 2
        same_value(mine, theirs[task], task)


def test_prompt_style_chat_is_one_user_turn_as_lm_eval(tiny_model, tiny_tokenizer, chat_manager, tmp_path):
    """`--prompt-style chat` is `lm_eval --apply_chat_template --fewshot_as_multiturn false` (exemplars
    and question in one user turn), per row as HFLM gives it, and none of its requests is served from
    the cache a plain-text run filled; a tokenizer without a chat template is refused in one line."""
    from instructkit.evaluate.backends.hf import HFBackend
    from instructkit.evaluate.cache import RequestCache
    from instructkit.evaluate.config import EvalConfig
    from instructkit.evaluate.lm_eval_model import lm_from_backend, run_lm_eval_tasks
    from instructkit.evaluate.lm_eval_tasks import chat_options, task_records

    backend = HFBackend(tiny_model, tiny_tokenizer, batch_size=4)
    flags = chat_options(EvalConfig(prompt_style="chat"), backend)
    assert flags == {"apply_chat_template": True, "fewshot_as_multiturn": False}
    tasks, options = ["arc_easy", "gsm8k_short"], {"task_manager": chat_manager, "limit": 2, "num_fewshot": 2}
    lm = lm_from_backend(backend)
    lm.use_cache(RequestCache(tmp_path / "cache.sqlite"))
    run_lm_eval_tasks(lm, tasks, **options, **chat_options(EvalConfig(), backend))  # base: plain text
    misses = lm.cache_misses
    assert lm.cache_hits == 0 and misses > 0
    ours = run_lm_eval_tasks(lm, tasks, **options, **flags)
    assert lm.cache_hits == 0 and lm.cache_misses == 2 * misses  # chat prompts: other requests, other keys
    theirs = _hf_records(tiny_model, tiny_tokenizer, chat_manager, tasks, **flags)
    for task in tasks:
        same_value(task_records(ours["samples"][task]), theirs[task], task)

    tiny_tokenizer.chat_template, template = None, tiny_tokenizer.chat_template
    try:
        with pytest.raises(
            InstructkitError, match="no chat template for lm-eval's tasks; use --prompt-style base"
        ):
            chat_options(EvalConfig(prompt_style="chat"), backend)
    finally:
        tiny_tokenizer.chat_template = template


def test_lm_eval_task_options_are_refused_in_one_line(saved_tiny_model, tmp_path):
    from instructkit.evaluate.lm_eval_tasks import parse_lm_eval_specs

    assert parse_lm_eval_specs(["gsm8k:num_fewshot=8", "piqa", "piqa"]) == {
        "gsm8k": {"num_fewshot": 8},
        "piqa": {},
    }
    for spec, message in [
        ("gsm8k:shots=8", "lm-eval task 'gsm8k:shots=8': unknown option(s) shots; an lm-eval task takes only num_fewshot"),
        ("gsm8k:num_fewshot=-1", "lm-eval task 'gsm8k:num_fewshot=-1': num_fewshot=-1 must be a whole number >= 0"),
        ("gsm8k:num_fewshot=two", "num_fewshot='two' must be a whole number >= 0"),
        ("gsm8k:num_fewshot=8,gsm8k", "lm-eval task gsm8k is named twice with different options"),
    ]:  # fmt: skip
        done = _run(saved_tiny_model, tmp_path / "run", "--lm-eval-tasks", spec)
        assert isinstance(done.exception, InstructkitError), done.output
        assert message in str(done.exception) and "\n" not in str(done.exception)
