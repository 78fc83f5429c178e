"""lm-eval's own task definitions on instructkit's backend give what lm-eval's `hf` model (HFLM) gives,
per sample: log-likelihoods within 1e-4, the same is_greedy, identical greedy text, identical metrics.

Both run on the same loaded model and tokenizer through `simple_evaluate` on local copies of the tasks'
data (`lm_eval_local.local_task_dir`: official YAMLs included, only the data source overridden), a
few documents per task. The SmolLM2-135M tests are marked slow, like tests/evaluate/test_eval_real_model.py.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is in the `test` extra")

from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from helpers.lm_eval_parity import same_value
from helpers.paths import FIXTURES_ROOT
from instructkit.errors import InstructkitError  # noqa: E402
from instructkit.evaluate.backends.hf import HFBackend  # noqa: E402
from instructkit.evaluate.lm_eval_local import local_task_dir  # noqa: E402
from instructkit.evaluate.lm_eval_model import lm_class, lm_from_backend, run_lm_eval_tasks  # noqa: E402

FIXTURES = FIXTURES_ROOT / "lm_eval"
BBH = ["bbh_cot_fewshot_sports_understanding", "bbh_cot_fewshot_date_understanding"]
LOGLIK_TASKS = ["piqa", "mmlu_anatomy", "hellaswag", "arc_easy", "winogrande", "wikitext"]
MMLU_5_SHOT = {"task_num_fewshot": {"mmlu_anatomy": 5}}  # the published setting; lm-eval's YAML default is 0
GEN_TASKS = ["gsm8k", "gsm8k_cot", *BBH]


@pytest.fixture(scope="module", autouse=True)
def _quiet():
    logging.getLogger("lm_eval").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def task_manager(tmp_path_factory, shared_data) -> TaskManager:
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    local_task_dir(shared_data, folder, fixtures=FIXTURES)
    return TaskManager(include_path=str(folder), include_defaults=False)


def _run(lm: Any, tasks: list[str], task_manager: TaskManager, **options: Any) -> dict[str, Any]:
    return run_lm_eval_tasks(lm, tasks, task_manager=task_manager, **options)


def _both(model, tokenizer, tasks, task_manager, batch_size=4, **options):
    """(instructkit's LM, HFLM) outputs on the same model, tokenizer, tasks and options."""
    ours = lm_from_backend(HFBackend(model, tokenizer, batch_size=batch_size))
    theirs = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    return _run(ours, tasks, task_manager, **options), _run(theirs, tasks, task_manager, **options)


def assert_same_per_sample(ours: dict[str, Any], theirs: dict[str, Any], tasks: list[str]) -> None:
    """Every task's samples: same docs, responses, filtered responses and per-sample metric values."""
    for task in tasks:
        mine, ref = ours["samples"][task], theirs["samples"][task]
        assert len(mine) == len(ref) > 0, task
        for a, b in zip(mine, ref):
            where = f"{task} doc {b['doc_id']} filter {b['filter']}"
            assert (a["doc_id"], a["filter"], a["arguments"]) == (b["doc_id"], b["filter"], b["arguments"]), (
                where
            )
            same_value(a["resps"], b["resps"], f"{where} resps")
            same_value(a["filtered_resps"], b["filtered_resps"], f"{where} filtered_resps")
            for metric in b["metrics"]:
                same_value(a[metric], b[metric], f"{where} {metric}")
        for name, value in theirs["results"][task].items():
            if isinstance(value, (int, float)) and not name.endswith("_stderr,none"):
                same_value(ours["results"][task][name], value, f"{task} {name}")


# ---- the tiny model (every run) ----


def test_tasks_are_found_and_read_from_local_files(task_manager):
    """The generated YAMLs keep the official task names and read the local rows."""
    for name in [*LOGLIK_TASKS, *GEN_TASKS]:
        assert name in task_manager.all_tasks, name
    tasks = task_manager.load(["piqa", "mmlu_anatomy", "hellaswag"])["tasks"]
    piqa = tasks["piqa"]
    assert piqa.config.dataset_path == "json" and len(piqa.eval_docs) == 1838
    assert piqa.doc_to_text(piqa.eval_docs[0]).startswith("Question: How do I ready a guinea pig cage")
    assert piqa.doc_to_target(piqa.eval_docs[0]) == 0  # label read from valid-labels.lst
    assert len(tasks["mmlu_anatomy"].fewshot_docs()) == 5
    assert len(tasks["hellaswag"].eval_docs) == 6


@pytest.mark.slow
def test_local_tasks_take_precedence_over_the_hub_ones(tmp_path, shared_data):
    """With lm-eval's own tasks indexed too, the official names resolve to the local YAMLs."""
    names = local_task_dir(shared_data, tmp_path, fixtures=FIXTURES)
    index = TaskManager(include_path=str(tmp_path)).task_index
    for name in ["piqa", "mmlu_anatomy", "gsm8k", "hellaswag", BBH[0]]:
        assert name in names and index[name].yaml_path.parent == tmp_path, name


def test_local_data_errors_name_the_file_and_record(tmp_path):
    """Bad local data stops with the file and record, not a silent mis-conversion."""
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    (tmp_path / "mmlu" / "dev").mkdir()
    (tmp_path / "mmlu" / "dev" / "anatomy_dev.csv").write_text("Q?,a,b,c,d,A\n")
    (tmp_path / "mmlu" / "test" / "anatomy_test.csv").write_text("Q?,a,b,c,d,A\nQ2?,a,b,c,d,AB\n")
    with pytest.raises(InstructkitError, match=r"anatomy_test.csv: record 2 needs 6 fields"):
        local_task_dir(tmp_path, tmp_path / "out")
    (tmp_path / "mmlu" / "test" / "anatomy_test.csv").write_text("Q?,a,b,c,d,C\n")
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    (tmp_path / "piqa" / "valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(InstructkitError, match="2 labels for 1 rows"):
        local_task_dir(tmp_path, tmp_path / "out")
    (tmp_path / "piqa" / "valid-labels.lst").write_text("1\n")
    (tmp_path / "fix").mkdir()
    (tmp_path / "fix" / "hellaswag.jsonl").write_text("{}\n")
    with pytest.raises(InstructkitError, match="<task>.<split>.jsonl"):
        local_task_dir(tmp_path, tmp_path / "out", fixtures=tmp_path / "fix")
    assert local_task_dir(tmp_path, tmp_path / "out") == ["piqa", "mmlu_anatomy"]


def test_mgsm_file_errors_name_the_file_and_row(tmp_path):
    (tmp_path / "mgsm").mkdir()
    (tmp_path / "mgsm" / "mgsm_en.tsv").write_text("Q one?\t3\nQ two?\tthree\n", encoding="utf-8")
    with pytest.raises(InstructkitError, match=r"mgsm_en.tsv: row 2 needs question<TAB>integer answer"):
        local_task_dir(tmp_path, tmp_path / "out")
    (tmp_path / "mgsm" / "mgsm_en.tsv").write_text("Q one?\t3\n", encoding="utf-8")
    (tmp_path / "mgsm" / "mgsm_exemplars.jsonl").write_text('{"lang": "en", "q": "Q"}\n', encoding="utf-8")
    with pytest.raises(InstructkitError, match=r"mgsm_exemplars.jsonl:1: a: missing field"):
        local_task_dir(tmp_path, tmp_path / "out")


def test_loglikelihood_tasks_match_hf(tiny_model, tiny_tokenizer, task_manager):
    """Multiple choice (one context, several continuations; winogrande: several contexts, one
    continuation), MMLU 5-shot and rolling log-likelihood (wikitext) equal HFLM per sample."""
    ours, theirs = _both(
        tiny_model, tiny_tokenizer, LOGLIK_TASKS, task_manager, limit=4, batch_size=3, **MMLU_5_SHOT
    )
    assert ours["n-shot"]["mmlu_anatomy"] == theirs["n-shot"]["mmlu_anatomy"] == 5
    assert_same_per_sample(ours, theirs, LOGLIK_TASKS)


def test_generation_tasks_match_hf(tiny_model, tiny_tokenizer, task_manager):
    """gsm8k 5-shot, its CoT variant and two BBH CoT tasks: identical text, filters and exact_match."""
    ours, theirs = _both(
        tiny_model, tiny_tokenizer, GEN_TASKS, task_manager, limit=3, gen_kwargs={"max_gen_toks": 24}
    )
    assert_same_per_sample(ours, theirs, GEN_TASKS)


def test_a_tokenizer_that_adds_bos_matches_hf(tiny_tokenizer, task_manager):
    """Llama/Mistral-style tokenizers add `<s>` when encoding: contexts, continuations, rolling windows,
    prompts and chat-templated prompts still come out as HFLM's, per sample."""
    from helpers.bos_tokenizer import train_bos_tokenizer
    from helpers.paths import TOKENIZER_CORPUS
    from instructkit.models.tiny import BUILTIN_TEMPLATES, build_tiny_model

    tokenizer = train_bos_tokenizer(TOKENIZER_CORPUS * 3)
    assert tokenizer("Hi").input_ids[0] == tokenizer.bos_token_id
    model = build_tiny_model("tiny:nano", tokenizer, seed=0).eval()
    tasks = ["piqa", "mmlu_anatomy", "wikitext", "gsm8k"]
    options = {"limit": 2, "gen_kwargs": {"max_gen_toks": 16}}
    ours, theirs = _both(model, tokenizer, tasks, task_manager, batch_size=3, **options, **MMLU_5_SHOT)
    assert_same_per_sample(ours, theirs, tasks)
    chat = {"apply_chat_template": True, "system_instruction": "Be brief."}
    for template in ("tulu", "llama3"):  # llama3's template writes `<s>` itself: it must not come twice
        tokenizer.chat_template = BUILTIN_TEMPLATES[template]
        ours, theirs = _both(model, tokenizer, ["piqa", "gsm8k"], task_manager, **options, **chat)
        assert_same_per_sample(ours, theirs, ["piqa", "gsm8k"])
        prompt = ours["samples"]["gsm8k"][0]["arguments"][0][0]
        assert prompt.startswith("<s>") == (template == "llama3")
        ids = lm_from_backend(HFBackend(model, tokenizer))._prompt_ids(prompt)
        assert ids[0] == tokenizer.bos_token_id != ids[1]


def test_the_models_generation_rules_match_hf(tiny_model, tiny_tokenizer, task_manager):
    """HFLM's `generate` follows the model's generation config (Qwen2.5-Instruct ships a repetition
    penalty): greedy text under a repetition penalty and n-gram blocking is still HFLM's, per sample."""
    import copy

    model = copy.deepcopy(tiny_model)
    model.generation_config.repetition_penalty = 1.5
    model.generation_config.no_repeat_ngram_size = 3
    ours, theirs = _both(
        model, tiny_tokenizer, ["gsm8k"], task_manager, limit=3, gen_kwargs={"max_gen_toks": 24}
    )
    assert_same_per_sample(ours, theirs, ["gsm8k"])


def test_mgsm_tasks_read_the_shared_files_and_match_hf(tiny_model, tiny_tokenizer, task_manager, shared_data):
    """MGSM's TSVs and exemplars become lm-eval's `juletxara/mgsm` rows (answers like "2,125" as the
    integer 2125, exemplars as the train split): direct and native CoT, 3-shot, equal HFLM per sample."""
    from lm_eval.tasks import get_task_dict

    tasks = ["mgsm_direct_de", "mgsm_native_cot_ja"]
    docs = get_task_dict(["mgsm_native_cot_de"], task_manager)["mgsm_native_cot_de"]
    test, train = list(docs.test_docs()), list(docs.training_docs())
    assert (len(test), len(train)) == (250, 8) and test[146]["answer_number"] == 2125
    assert docs.doc_to_target(train[0]).startswith("Roger")  # the exemplar's answer after its prefix
    assert docs.doc_to_text(test[0]).startswith("Frage: ")  # test rows carry no answer
    options = {"limit": 2, "gen_kwargs": {"max_gen_toks": 16}, "task_num_fewshot": dict.fromkeys(tasks, 3)}
    ours, theirs = _both(tiny_model, tiny_tokenizer, tasks, task_manager, **options)
    assert_same_per_sample(ours, theirs, tasks)
    assert ours["samples"]["mgsm_native_cot_ja"][0]["arguments"][0][0].count("ステップごとの答え") == 4


def test_rolling_windows_follow_max_length(tiny_model, tiny_tokenizer, task_manager):
    """A max_length far below the texts' lengths: several windows per text, still HFLM's numbers."""
    ours = lm_from_backend(HFBackend(tiny_model, tiny_tokenizer, batch_size=4), max_length=48)
    theirs = HFLM(pretrained=tiny_model, tokenizer=tiny_tokenizer, batch_size=4, max_length=48)
    tasks = ["wikitext"]
    a, b = (_run(lm, tasks, task_manager, limit=3) for lm in (ours, theirs))
    assert_same_per_sample(a, b, tasks)
    whole = _run(lm_from_backend(HFBackend(tiny_model, tiny_tokenizer)), ["wikitext"], task_manager, limit=3)
    truncated = a["samples"]["wikitext"][0]["resps"][0][0]
    assert truncated != whole["samples"]["wikitext"][0]["resps"][0][0]  # the windows did change the score


def test_left_truncation_and_empty_contexts_match_hf(tiny_model, tiny_tokenizer, task_manager):
    """max_length=64 cuts MMLU's 5-shot contexts and gsm8k's prompts from the left, as HFLM does;
    an empty context is scored after the prefix token (BOS), as HFLM does."""
    from lm_eval.api.instance import Instance

    ours = lm_from_backend(HFBackend(tiny_model, tiny_tokenizer, batch_size=4), max_length=64)
    theirs = HFLM(pretrained=tiny_model, tokenizer=tiny_tokenizer, batch_size=4, max_length=64)
    tasks = ["mmlu_anatomy", "gsm8k"]
    options = {"limit": 2, "gen_kwargs": {"max_gen_toks": 8}}
    a, b = (_run(lm, tasks, task_manager, **options) for lm in (ours, theirs))
    assert_same_per_sample(a, b, tasks)
    requests = [
        Instance("loglikelihood", {}, ("", text), i) for i, text in enumerate(["Hello world", "<s>Hi"])
    ]
    mine, ref = ours.loglikelihood(requests), theirs.loglikelihood(requests)
    same_value(mine, ref, "empty context")


def test_chat_template_system_prompt_and_multiturn_match_hf(tiny_model, tiny_tokenizer, task_manager):
    options = {
        "limit": 2,
        "num_fewshot": 2,
        "apply_chat_template": True,
        "system_instruction": "Answer carefully.",
        "fewshot_as_multiturn": True,
        "gen_kwargs": {"max_gen_toks": 12},
    }
    tasks = ["arc_easy", "gsm8k"]
    ours, theirs = _both(tiny_model, tiny_tokenizer, tasks, task_manager, **options)
    prompt = ours["samples"]["gsm8k"][0]["arguments"][0][0]
    assert prompt.count("<|user|>") == 3 and "Answer carefully." in prompt  # 2 shots as turns, then the query
    assert_same_per_sample(ours, theirs, tasks)


def test_per_task_shots_apply_to_that_task_only(tiny_model, tiny_tokenizer, task_manager):
    """`task_num_fewshot` sets one task's shots as simple_evaluate's global num_fewshot would (the same
    samples as HFLM run with num_fewshot=3 on that task alone); the other task keeps its definition's."""
    backend = HFBackend(tiny_model, tiny_tokenizer, batch_size=4)
    tasks, options = ["arc_easy", "piqa"], {"limit": 2}
    ours = _run(lm_from_backend(backend), tasks, task_manager, task_num_fewshot={"arc_easy": 3}, **options)
    assert ours["n-shot"] == {"arc_easy": 3, "piqa": 0}
    assert ours["samples"]["arc_easy"][0]["arguments"][0][0].count("Question:") == 4  # 3 shots + the query
    assert ours["samples"]["piqa"][0]["arguments"][0][0].count("Question:") == 1
    theirs = HFLM(pretrained=tiny_model, tokenizer=tiny_tokenizer, batch_size=4)
    assert_same_per_sample(
        ours, _run(theirs, ["arc_easy"], task_manager, num_fewshot=3, **options), ["arc_easy"]
    )
    with pytest.raises(
        InstructkitError, match=r"lm-eval task ifeval \(ifeval:num_fewshot=2\): its definition fixes"
    ):
        _run(lm_from_backend(backend), ["ifeval"], task_manager, task_num_fewshot={"ifeval": 2}, **options)
    with pytest.raises(InstructkitError, match="not both"):
        _run(lm_from_backend(backend), tasks, task_manager, task_num_fewshot={"piqa": 1}, num_fewshot=2)


def test_built_from_model_args_through_lm_eval_registry(saved_tiny_model):
    """`--model instructkit --model_args pretrained=...,dtype=...,batch_size=...,max_length=...`."""
    from lm_eval.api.registry import get_model

    assert get_model("instructkit") is lm_class()
    assert get_model("hf") is HFLM  # registering ours first must not hide lm-eval's own models
    args = f"pretrained={saved_tiny_model},dtype=float32,batch_size=3,max_length=256,device=cpu"
    lm = get_model("instructkit").create_from_arg_string(args, {"max_batch_size": None})
    assert (lm.batch_size, lm.max_length, lm.engine.batch_size) == (3, 256, 3)
    assert lm.engine.model.dtype.is_floating_point and str(lm.device) == "cpu"
    with pytest.raises(InstructkitError, match="parallelize"):
        get_model("instructkit").create_from_arg_string(f"pretrained={saved_tiny_model},parallelize=True")
    with pytest.raises(InstructkitError, match="give a number"):
        get_model("instructkit").create_from_arg_string(f"pretrained={saved_tiny_model},batch_size=auto")


def test_unsupported_generation_kwargs_are_refused(tiny_model, tiny_tokenizer):
    from lm_eval.api.instance import Instance

    backend = HFBackend(tiny_model, tiny_tokenizer, batch_size=5)
    assert lm_from_backend(backend).batch_size == 5
    with pytest.raises(InstructkitError, match="already built"):
        lm_from_backend(backend, batch_size=8)
    with pytest.raises(InstructkitError, match="already built"):
        lm_from_backend(backend, dtype="bfloat16")
    lm = lm_from_backend(backend)
    request = Instance("generate_until", {}, ("Hello", {"until": ["\n"], "top_k": 5}), 0)
    with pytest.raises(InstructkitError, match="top_k"):
        lm.generate_until([request])


def test_sampled_repeats_differ_and_are_reproducible(tiny_model, tiny_tokenizer):
    """lm-eval sends a sampled request once per repeat (self-consistency): each repeat draws its own
    sample, and the same call gives the same samples again."""
    from lm_eval.api.instance import Instance

    lm = lm_from_backend(HFBackend(tiny_model, tiny_tokenizer))
    args = ("What is 12 plus 35?", {"until": [], "do_sample": True, "temperature": 1.0, "max_gen_toks": 12})
    request = Instance("generate_until", {}, args, 0)
    first = lm.generate_until([request] * 4)
    assert len(set(first)) > 1
    assert lm.generate_until([request] * 4) == first


def _ifeval_requests(shared_data, n: int, max_gen_toks: int) -> list:
    """IFEval's first prompts as lm-eval builds them: doc_to_text is the prompt, gen_kwargs the YAML's."""
    import json

    from lm_eval.api.instance import Instance
    from lm_eval.tasks._yaml_loader import load_yaml

    from instructkit.evaluate.lm_eval_local import lm_eval_tasks_dir

    config = load_yaml(lm_eval_tasks_dir() / "ifeval/ifeval.yaml", resolve_func=False, recursive=True)
    gen_kwargs = {**config["generation_kwargs"], "max_gen_toks": max_gen_toks}
    lines = (shared_data / "ifeval" / "input_data.jsonl").read_text().splitlines()[:n]
    return [
        Instance("generate_until", {}, (json.loads(line)["prompt"], dict(gen_kwargs)), i)
        for i, line in enumerate(lines)
    ]


def test_ifeval_generations_match_hf(tiny_model, tiny_tokenizer, shared_data):
    """IFEval's prompts and generation settings (no stop strings: EOS or the token limit ends a row).
    The metric needs langdetect, immutabledict and nltk's punkt_tab; the next test runs it where present."""
    requests = _ifeval_requests(shared_data, 4, 20)
    ours = lm_from_backend(HFBackend(tiny_model, tiny_tokenizer, batch_size=3)).generate_until(requests)
    theirs = HFLM(pretrained=tiny_model, tokenizer=tiny_tokenizer, batch_size=3).generate_until(requests)
    assert ours == theirs and all(ours)


def _ifeval_metric_available() -> bool:
    try:
        import lm_eval.tasks.ifeval.instructions  # noqa: F401  (langdetect, immutabledict, nltk)
        import nltk

        nltk.data.find("tokenizers/punkt_tab")
    except (ImportError, LookupError):
        return False
    return True


@pytest.mark.skipif(
    not _ifeval_metric_available(), reason="IFEval's metric needs langdetect, immutabledict, punkt_tab"
)
def test_ifeval_task_matches_hf(tiny_model, tiny_tokenizer, task_manager):
    ours, theirs = _both(
        tiny_model, tiny_tokenizer, ["ifeval"], task_manager, limit=3, gen_kwargs={"max_gen_toks": 16}
    )
    assert_same_per_sample(ours, theirs, ["ifeval"])


# ---- SmolLM2-135M (slow) ----


@pytest.fixture(scope="module")
def smollm2_model(smollm2):
    import torch

    from instructkit.models.loading import load_causal_lm, load_tokenizer

    path = str(smollm2.directory)
    return load_causal_lm(path, dtype=torch.float32).eval(), load_tokenizer(path)


@pytest.mark.slow
def test_smollm2_loglikelihood_tasks_match_hf(smollm2_model, task_manager):
    """The real model: piqa, MMLU 5-shot, hellaswag, ARC, winogrande (several contexts), wikitext (rolling)."""
    ours, theirs = _both(*smollm2_model, LOGLIK_TASKS, task_manager, limit=2, batch_size=8, **MMLU_5_SHOT)
    assert ours["n-shot"]["mmlu_anatomy"] == theirs["n-shot"]["mmlu_anatomy"] == 5
    assert_same_per_sample(ours, theirs, LOGLIK_TASKS)


@pytest.mark.slow
def test_smollm2_generation_tasks_match_hf(smollm2_model, task_manager, shared_data):
    """The real model: gsm8k 5-shot, gsm8k CoT, two BBH CoT tasks (one doc each) and IFEval prompts.

    The few-shot prompts (243 to 1,364 tokens) run one per batch: in one batch instructkit's backend
    pads them to 4 x 1,364 = 5,456 prefill tokens instead of 3,153, and CPU time goes there (39 s ->
    26 s for both LMs). Left padding in a batch is tested on the real model by the two IFEval prompts
    (different lengths, one batch) and on the tiny model by the tests above."""
    options = {"limit": 1, "batch_size": 1, "gen_kwargs": {"max_gen_toks": 12}}
    ours, theirs = _both(*smollm2_model, GEN_TASKS, task_manager, **options)
    assert_same_per_sample(ours, theirs, GEN_TASKS)
    assert all(ours["samples"][t][0]["resps"][0][0].strip() for t in GEN_TASKS)  # real text
    requests = _ifeval_requests(shared_data, 2, 12)
    model, tokenizer = smollm2_model
    assert len({len(tokenizer(r.args[0])["input_ids"]) for r in requests}) == 2  # one padded batch
    mine = lm_from_backend(HFBackend(model, tokenizer, batch_size=8)).generate_until(requests)
    assert mine == HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8).generate_until(requests)
