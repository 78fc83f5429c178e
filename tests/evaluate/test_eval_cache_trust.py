"""The evaluation request cache never serves a stale result: its model fingerprint covers every weight,
the adapter, tokenizer and chat template; its request keys cover every prompt and generation setting."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from helpers.paths import FIXTURES_ROOT
from instructkit.evaluate.backends.hf import HFBackend
from instructkit.evaluate.backends.model_identity import source_digest
from instructkit.evaluate.config import EvalConfig
from instructkit.evaluate.requests import GenerationRequest, LoglikelihoodRequest
from instructkit.evaluate.runner import evaluate

FIXTURES = FIXTURES_ROOT / "eval"
TASKS = ["boolq", "arc", "tydiqa:max_new_tokens=4"]


@pytest.fixture(autouse=True)
def _private_digest_memo(tmp_path, monkeypatch):
    """Keep the file-digest memo inside the test's folder."""
    monkeypatch.setenv("INSTRUCTKIT_CACHE", str(tmp_path / "user-cache"))


def _save(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _perturbed(model, scale: float = 0.5):
    """A copy with every weight changed except the first parameter (the token embedding), same shapes:
    what a LoRA merge saved over the same folder looks like to a fingerprint of the first parameter."""
    other = copy.deepcopy(model)
    params = list(other.parameters())
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in params[1:]:
            p.add_(scale * torch.randn(p.shape, generator=generator))
    assert torch.equal(params[0], next(model.parameters()))
    return other


def _run(model_dir: Path, out: Path, tasks: list[str] = TASKS) -> dict:
    config = EvalConfig(tasks=tasks, data_dir=str(FIXTURES), batch_size=4)
    return evaluate(str(model_dir), config=config, out_dir=out)


def _loglikelihoods(out: Path) -> list:
    lines = (out / "samples" / "boolq.jsonl").read_text().splitlines()
    return [json.loads(line)["loglikelihoods"] for line in lines]


def test_weights_overwritten_in_place_miss_the_cache_and_change_results(tiny_model, tiny_tokenizer, tmp_path):
    model_dir = _save(tiny_model, tiny_tokenizer, tmp_path / "model")
    out = tmp_path / "out"
    first = _run(model_dir, out)
    before = _loglikelihoods(out)
    assert first["cache"]["hits"] == 0 and first["cache"]["misses"] > 0

    again = _run(model_dir, out)  # nothing changed: every request is served from the cache
    assert again["cache"] == {"hits": first["cache"]["misses"], "misses": 0}
    assert _loglikelihoods(out) == before

    _perturbed(tiny_model).save_pretrained(model_dir)  # same folder, same shapes, new values
    changed = _run(model_dir, out)
    assert changed["cache"]["hits"] == 0 and changed["cache"]["misses"] == first["cache"]["misses"]
    assert changed["model"] != first["model"]
    assert _loglikelihoods(out) != before


def test_changed_generation_setting_or_few_shot_count_misses(tiny_model, tiny_tokenizer, tmp_path):
    model_dir = _save(tiny_model, tiny_tokenizer, tmp_path / "model")
    out = tmp_path / "out"
    first = _run(model_dir, out, ["tydiqa:max_new_tokens=4", "mmlu:num_fewshot=1"])
    longer = _run(model_dir, out, ["tydiqa:max_new_tokens=5"])
    assert longer["cache"]["hits"] == 0 and longer["cache"]["misses"] == 3
    more_shots = _run(model_dir, out, ["mmlu:num_fewshot=2"])
    assert more_shots["cache"]["hits"] == 0 and more_shots["cache"]["misses"] > 0
    same = _run(model_dir, out, ["tydiqa:max_new_tokens=4", "mmlu:num_fewshot=1"])
    assert same["cache"] == {"hits": sum(first["cache"].values()), "misses": 0}


@pytest.mark.parametrize(
    "request_, changes",
    [
        (LoglikelihoodRequest("Q: 1+1? A:", " 2"), {"context": "Q: 1+2? A:", "continuation": " 3"}),
        (
            GenerationRequest("Q: hi", stop=("\n",), max_new_tokens=8, temperature=0.0, n=1, seed=0),
            {
                "prompt": "Q: ho",
                "stop": ("\n\n",),
                "max_new_tokens": 9,
                "temperature": 0.7,
                "n": 2,
                "seed": 1,
                "prompt_ids": (1, 2, 3),
            },
        ),
    ],
)
def test_every_request_field_is_part_of_its_key(request_, changes):
    fields = {f.name for f in dataclasses.fields(request_)}
    assert set(changes) == fields  # a new field must be added here (and so to the key) on purpose
    for name, value in changes.items():
        assert dataclasses.replace(request_, **{name: value}).key() != request_.key(), name


def test_in_memory_fingerprint_covers_every_weight_and_the_chat_template(tiny_model, tiny_tokenizer):
    base = HFBackend(tiny_model, tiny_tokenizer).fingerprint()
    assert HFBackend(tiny_model, tiny_tokenizer).fingerprint() == base
    last_only = copy.deepcopy(tiny_model)
    with torch.no_grad():
        list(last_only.parameters())[-1][0] += 1.0  # one value of the last weight
    assert HFBackend(last_only, tiny_tokenizer).fingerprint() != base
    other_template = copy.deepcopy(tiny_tokenizer)
    other_template.chat_template = tiny_tokenizer.chat_template + " "
    assert HFBackend(tiny_model, other_template).fingerprint() != base
    assert HFBackend(tiny_model, tiny_tokenizer, deterministic=True).fingerprint() != base


def test_folder_digest_covers_tokenizer_and_template_files_not_training_leftovers(
    tiny_model, tiny_tokenizer, tmp_path
):
    model_dir = _save(tiny_model, tiny_tokenizer, tmp_path / "model")
    base = source_digest(str(model_dir))
    (model_dir / "README.md").write_text("notes")
    (model_dir / "checkpoint-10").mkdir()
    (model_dir / "checkpoint-10" / "model.safetensors").write_bytes(b"old")
    assert source_digest(str(model_dir)) == base
    (model_dir / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    with_template = source_digest(str(model_dir))
    assert with_template != base
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    config["eos_token"] = "<pad>"
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    assert source_digest(str(model_dir)) != with_template


def test_adapter_folder_digest_follows_its_base_model(tiny_model, tiny_tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    base_dir = _save(tiny_model, tiny_tokenizer, tmp_path / "base")
    lora = get_peft_model(copy.deepcopy(tiny_model), LoraConfig(r=2, target_modules=["q_proj"]))
    lora.peft_config["default"].base_model_name_or_path = str(base_dir)
    lora.save_pretrained(tmp_path / "adapter")
    before = source_digest(str(tmp_path / "adapter"))
    _perturbed(tiny_model).save_pretrained(base_dir)  # the base changes, the adapter files do not
    assert source_digest(str(tmp_path / "adapter")) != before


def test_a_pretrained_reference_is_identified_by_its_fetched_folder(smollm2, tmp_path):
    """`eval run --model pretrained:<name>` keys its cache on the fetched folder's files, not a hub lookup.

    The private cache's `models/` is the fetched one, so the reference resolves to `smollm2.directory`
    (not a second download and conversion) while both digests are still computed here, memo-free."""
    (tmp_path / "user-cache").mkdir(exist_ok=True)
    (tmp_path / "user-cache" / "models").symlink_to(smollm2.directory.parent, target_is_directory=True)
    assert source_digest("pretrained:smollm2-135m-instruct") == source_digest(str(smollm2.directory))


@pytest.mark.parametrize("name", ["tiny:micro", "not a hub id", "a/b/c"])
def test_a_name_that_is_no_hub_id_has_no_source_digest(name):
    """The caller then hashes the in-memory weights; a name the hub would reject must not crash the run."""
    assert source_digest(name) is None
