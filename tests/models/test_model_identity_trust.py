"""Every model input is keyed by what is on disk (issue #20, part 2).

- a `pretrained:` reference counts by the content of the folder the stages read, not the wheel's pin;
- a LoRA adapter records its base by content and is refused on another base (unless allowed);
- tokenizer identity covers every part that changes the ids a text gets, and names the part;
- a recipe whose prepare tokenizer and train model disagree is refused before any stage runs.

Tiny tokenizers and models built here (seconds); no download.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.chats import CHATS, adapter_on_copy, perturb_weights, prepare_chats
from helpers.files import write_jsonl
from instructkit.cli.app import app
from instructkit.evaluate.backends.hf import HFBackend
from instructkit.models.adapters import BASE_FILE, AdapterBaseMismatchError, check_adapter_base
from instructkit.models.identity import (
    IDENTITY_KEY,
    TokenizerMismatchError,
    check_data_matches_model,
    check_same_tokenizer,
    source_digest,
    tokenizer_identity,
)
from instructkit.models.loading import load_tokenizer
from instructkit.models.pretrained import KNOWN_MODELS
from instructkit.pipeline.inputs import local_digest, reference_inputs
from instructkit.pipeline.recipe import load_recipe
from instructkit.pipeline.runner import build_pipeline
from instructkit.train.config import TrainConfig
from instructkit.train.run import train

# ---------------------------------------------------------------- tokenizer.json edits, one per part


def _lowercase(d: dict) -> None:
    d["normalizer"] = {"type": "Lowercase"}


def _prefix_space(d: dict) -> None:
    d["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = True


def _adds_bos(d: dict) -> None:
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    d["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
    }


def _lstrip_assistant(d: dict) -> None:
    for token in d["added_tokens"]:
        if token["content"] == "<|assistant|>":
            token["lstrip"] = True


def _drop_last_merge(d: dict) -> None:
    d["model"]["merges"] = d["model"]["merges"][:-1]  # same vocabulary; one merge no longer applies


def _decoder(d: dict) -> None:
    d["decoder"]["add_prefix_space"] = False


# (edit, the words the refusal uses, a text whose ids the edit changes)
REFUSED_EDITS = {
    "normalizer": (_lowercase, "normalizer differs", "What is 12 plus 35?"),
    "pre_tokenizer": (_prefix_space, "pre-tokenizer differs", "What is 12 plus 35?"),
    "post_processor": (_adds_bos, "post-processor differs", "What is 12 plus 35?"),
    "added_tokens": (_lstrip_assistant, "added tokens differ", "hi <|assistant|>"),
    "merges": (_drop_last_merge, "tokenization model (merges or its options) differs", None),
}


def edited_tokenizer(tokenizer, folder: Path, edit: Callable[[dict], None] | None) -> Path:
    """`tokenizer` saved to `folder` with its tokenizer.json edited on disk, as a user would."""
    tokenizer.save_pretrained(folder)
    if edit is not None:
        path = folder / "tokenizer.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return folder


def merged_text(folder: Path) -> str:
    """The text of the token the last merge makes (the only text `_drop_last_merge` changes)."""
    last = json.loads((folder / "tokenizer.json").read_text())["model"]["merges"][-1]
    pieces = last if isinstance(last, list) else last.split(" ")
    return load_tokenizer(str(folder)).convert_tokens_to_string(["".join(pieces)])


@pytest.fixture
def tokenizer_dir(tmp_path, tiny_tokenizer) -> Path:
    return edited_tokenizer(tiny_tokenizer, tmp_path / "tok", None)


@pytest.mark.parametrize("part", sorted(REFUSED_EDITS))
def test_each_part_that_changes_ids_is_refused_by_name(part, tmp_path, tiny_tokenizer, tokenizer_dir):
    edit, words, text = REFUSED_EDITS[part]
    changed = edited_tokenizer(tiny_tokenizer, tmp_path / "changed", edit)
    text = text or merged_text(tokenizer_dir)
    ours, theirs = load_tokenizer(str(tokenizer_dir)), load_tokenizer(str(changed))
    assert ours(text).input_ids != theirs(text).input_ids  # the edit really changes the ids
    assert ours.get_vocab() == theirs.get_vocab()  # ... with the same vocabulary (the old identity)
    with pytest.raises(TokenizerMismatchError) as err:
        check_same_tokenizer(tokenizer_identity(ours), "data D", tokenizer_identity(theirs), "model M")
    assert words in str(err.value) and "data D" in str(err.value) and "model M" in str(err.value)


def test_a_different_decoder_is_noted_not_refused(tmp_path, tiny_tokenizer, tokenizer_dir):
    changed = load_tokenizer(str(edited_tokenizer(tiny_tokenizer, tmp_path / "changed", _decoder)))
    ours = load_tokenizer(str(tokenizer_dir))
    assert ours("What is 12?").input_ids == changed("What is 12?").input_ids
    notes = check_same_tokenizer(tokenizer_identity(ours), "a", tokenizer_identity(changed), "b")
    assert notes == ["the decoder of a differs from that of b"]


# ---------------------------------------------------------------- train refuses prepared data


def model_with_tokenizer(tmp_path: Path, tiny_model, tiny_tokenizer, edit, name: str = "model") -> Path:
    folder = tmp_path / name
    tiny_model.save_pretrained(folder)
    return edited_tokenizer(tiny_tokenizer, folder, edit)


def test_train_refuses_data_whose_tokenizer_tokenizes_differently(
    tmp_path, tiny_model, tiny_tokenizer, tokenizer_dir
):
    data = prepare_chats(tmp_path, str(tokenizer_dir))
    model = model_with_tokenizer(tmp_path, tiny_model, tiny_tokenizer, _lowercase)
    config = TrainConfig(data=data, output_dir=tmp_path / "out", model=str(model), progress=False)
    with pytest.raises(TokenizerMismatchError, match="normalizer differs") as err:
        train(config)
    assert str(data) in str(err.value) and str(model) in str(err.value)


def test_a_chat_template_the_data_did_not_choose_is_refused(tmp_path, tiny_model, tiny_tokenizer):
    own = load_tokenizer(str(edited_tokenizer(tiny_tokenizer, tmp_path / "tok", None)))
    own.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # another template
    own.save_pretrained(tmp_path / "tok")
    model = model_with_tokenizer(tmp_path, tiny_model, tiny_tokenizer, None)
    data = prepare_chats(tmp_path, str(tmp_path / "tok"))
    meta = json.loads((data / "prepare.json").read_text())
    with pytest.raises(TokenizerMismatchError, match="chat template differs"):
        check_data_matches_model(str(data), meta, str(data / "tokenizer"), str(model))
    chosen = prepare_chats(tmp_path, str(tmp_path / "tok"), out="chosen", chat_template="chatml")
    meta = json.loads((chosen / "prepare.json").read_text())
    notes = check_data_matches_model(str(chosen), meta, str(chosen / "tokenizer"), str(model))
    assert len(notes) == 1 and "chat template" in notes[0]  # chosen at prepare: a note only


def test_an_old_record_is_completed_from_the_saved_tokenizer(
    tmp_path, tiny_model, tiny_tokenizer, tokenizer_dir
):
    data = prepare_chats(tmp_path, str(tokenizer_dir))
    meta = json.loads((data / "prepare.json").read_text())
    old = {k: v for k, v in meta[IDENTITY_KEY].items() if k not in ("version", "components")}
    meta[IDENTITY_KEY] = old  # what prepare.json held before identity version 2
    model = model_with_tokenizer(tmp_path, tiny_model, tiny_tokenizer, _prefix_space)
    with pytest.raises(TokenizerMismatchError, match="pre-tokenizer differs"):
        check_data_matches_model(str(data), meta, str(data / "tokenizer"), str(model))
    same = model_with_tokenizer(tmp_path, tiny_model, tiny_tokenizer, None, name="same")
    assert check_data_matches_model(str(data), meta, str(data / "tokenizer"), str(same)) == []
    newer = {**meta, IDENTITY_KEY: {**meta[IDENTITY_KEY], "version": 99}}
    with pytest.raises(TokenizerMismatchError, match="version 99, newer than"):
        check_data_matches_model(str(data), newer, str(data / "tokenizer"), str(same))


def test_a_tokenizer_folder_edited_after_prepare_is_refused(
    tmp_path, tiny_model, tiny_tokenizer, tokenizer_dir
):
    data = prepare_chats(tmp_path, str(tokenizer_dir))
    edited_tokenizer(load_tokenizer(str(data / "tokenizer")), data / "tokenizer", _lowercase)
    meta = json.loads((data / "prepare.json").read_text())
    model = model_with_tokenizer(tmp_path, tiny_model, tiny_tokenizer, _lowercase)
    with pytest.raises(TokenizerMismatchError, match=r"no longer matches .*normalizer changed"):
        check_data_matches_model(str(data), meta, str(data / "tokenizer"), str(model))


# ---------------------------------------------------------------- recipe pre-flight

RECIPE = """\
name: preflight
runs_dir: runs
sources: [chats.jsonl]
prepare: {{tokenizer: "{tokenizer}", max_length: 64}}
train: {{model: "{model}", max_steps: 1}}
"""


def write_recipe(folder: Path, tokenizer: str, model: str) -> Path:
    write_jsonl(folder / "chats.jsonl", CHATS)
    path = folder / "recipe.yaml"
    path.write_text(RECIPE.format(tokenizer=tokenizer, model=model))
    return path


def test_a_recipe_whose_tokenizer_and_model_disagree_is_refused_before_any_stage(
    tmp_path, monkeypatch, tiny_model, tiny_tokenizer, tokenizer_dir
):
    monkeypatch.chdir(tmp_path)
    model = model_with_tokenizer(tmp_path, tiny_model, tiny_tokenizer, _adds_bos)
    path = write_recipe(tmp_path, str(tokenizer_dir), str(model))
    with pytest.raises(TokenizerMismatchError) as err:
        load_recipe(path)
    message = str(err.value)
    assert "prepare.tokenizer and train.model disagree" in message and "post-processor differs" in message
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert isinstance(result.exception, TokenizerMismatchError), result.output
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was prepared
    tiny = write_recipe(tmp_path, "tiny:nano", str(model))
    with pytest.raises(TokenizerMismatchError, match="is trained on the data"):
        load_recipe(tiny)
    same = model_with_tokenizer(tmp_path, tiny_model, tiny_tokenizer, None, name="same")
    assert load_recipe(write_recipe(tmp_path, str(tokenizer_dir), str(same)))[0].train.model == str(same)


# ---------------------------------------------------------------- `pretrained:` by folder content


def test_a_pretrained_reference_is_keyed_by_the_folder_the_stages_read(
    tmp_path, monkeypatch, saved_tiny_model
):
    """A fetched model stand-in (no download): edits to its folder change its key, like a folder path's."""
    monkeypatch.setenv("INSTRUCTKIT_CACHE", str(tmp_path))
    name, spec = next(iter(KNOWN_MODELS.items()))
    models = tmp_path / "models"
    shutil.copytree(saved_tiny_model, models / name)
    (models / Path(spec.gguf_member).name).write_bytes(b"GGUF stand-in")  # fetch() finds both: no download
    ref = f"pretrained:{name}"

    def key() -> str:
        ((label, digest),) = reference_inputs("model", ref, "model").items()
        assert label == f"model {ref}"
        return digest

    first = key()
    assert first == local_digest(models / name)  # the folder, as for a model named by its path
    (models / name / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    second = key()
    assert second != first
    weights = models / name / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    assert key() not in (first, second)


def test_a_cached_hub_model_is_keyed_by_its_snapshot_files(tmp_path, monkeypatch, saved_tiny_model):
    """The snapshot from_pretrained loads offline, by content: an edited file changes the key."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("INSTRUCTKIT_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = shutil.copytree(saved_tiny_model, repo / "snapshots" / "0123abcd")
    first = reference_inputs("model", "org/tiny", "model")
    assert first == {"hub model org/tiny": local_digest(snapshot)}
    eval_key = source_digest("org/tiny")
    (snapshot / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    assert reference_inputs("model", "org/tiny", "model") != first and source_digest("org/tiny") != eval_key
    assert reference_inputs("model", "org/other", "model") == {"hub model org/other": "hub:unpinned"}


def test_editing_a_pretrained_folder_reruns_the_stages_that_read_it(tmp_path, monkeypatch, saved_tiny_model):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INSTRUCTKIT_CACHE", str(tmp_path / "cache"))
    name, spec = next(iter(KNOWN_MODELS.items()))
    folder = tmp_path / "cache" / "models" / name
    shutil.copytree(saved_tiny_model, folder)
    (folder.parent / Path(spec.gguf_member).name).write_bytes(b"GGUF stand-in")
    write_jsonl(tmp_path / "chats.jsonl", CHATS)
    recipe_text = (
        f"name: p\nsources: [chats.jsonl]\nprepare: {{tokenizer: 'pretrained:{name}', max_length: 64}}\n"
    )
    (tmp_path / "recipe.yaml").write_text(recipe_text)
    recipe = load_recipe(tmp_path / "recipe.yaml")[0]
    build_pipeline(recipe).run(log=lambda _: None)
    assert [row.status for row in build_pipeline(recipe).plan()] == ["cached"]
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    (row,) = build_pipeline(recipe).plan()
    assert (row.status, row.reasons) == ("run", [f"tokenizer pretrained:{name} changed (content)"])


# ---------------------------------------------------------------- adapters and their base


def test_lora_training_records_its_base_by_content(lora_run):
    base, adapter = lora_run
    record = json.loads((adapter / BASE_FILE).read_text())
    assert record["reference"] == str(base) and record["digest"]
    assert check_adapter_base(str(adapter)) == []  # unchanged base: nothing to say


def test_an_adapter_on_a_changed_base_is_refused_wherever_it_loads(lora_run, tmp_path):
    base, adapter = adapter_on_copy(lora_run, tmp_path)
    assert (
        HFBackend.from_pretrained(str(adapter), dtype="float32") is not None
    )  # a moved base is the same base
    perturb_weights(base)
    with pytest.raises(AdapterBaseMismatchError) as err:  # evaluation
        HFBackend.from_pretrained(str(adapter), dtype="float32")
    assert (
        str(adapter) in str(err.value)
        and str(base) in str(err.value)
        and "allow_base_mismatch" in str(err.value)
    )
    data = prepare_chats(tmp_path, str(base))
    config = TrainConfig(
        data=data, output_dir=tmp_path / "more", model=str(adapter), method="lora", progress=False
    )
    with pytest.raises(AdapterBaseMismatchError):  # continuing it
        train(config)


def test_allowing_a_base_mismatch_loads_it_with_a_warning(lora_run, tmp_path, capsys):
    base, adapter = adapter_on_copy(lora_run, tmp_path)
    perturb_weights(base)
    (warning,) = check_adapter_base(str(adapter), allow_base_mismatch=True)
    assert "was trained on base" in warning and "used anyway (allow_base_mismatch)" in warning
    backend = HFBackend.from_pretrained(str(adapter), dtype="float32", allow_base_mismatch=True)
    assert any("lora_" in name for name, _ in backend.model.named_parameters())
    captured = capsys.readouterr()
    assert "used anyway (allow_base_mismatch)" in captured.out + captured.err


def test_an_adapter_without_a_record_loads_with_a_warning(lora_run, tmp_path):
    _, adapter = adapter_on_copy(lora_run, tmp_path)
    (adapter / BASE_FILE).unlink()  # an adapter made elsewhere
    (warning,) = check_adapter_base(str(adapter))
    assert "records no base identity" in warning


def test_a_tiny_lora_records_its_base_weights(tmp_path):
    data = prepare_chats(tmp_path, "tiny:nano")
    config = TrainConfig(
        data=data,
        output_dir=tmp_path / "out",
        model="tiny:nano",
        method="lora",
        lora_target_modules=["q_proj"],
        max_steps=1,
        gradient_accumulation_steps=1,
        progress=False,
    )
    train(config)
    record = json.loads((tmp_path / "out" / BASE_FILE).read_text())
    assert record["reference"] == "tiny:nano" and record["digest"].startswith("weights:")
