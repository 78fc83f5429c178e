"""An adapter's base, checked everywhere it is loaded and reported wherever a mismatch was allowed
(issue #20, part 2): `eval run --allow-base-mismatch`, the warning in results.json, the eval and run
reports and the model card, the base record in every adapter checkpoint, merging, run identities by
content, and the one sha256 helper giving the digests the old code gave.

Tiny models trained here (seconds); no download.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.chats import adapter_on_copy, lora_config, perturb_weights, prepare_chats
from helpers.paths import FIXTURES_ROOT
from helpers.report_runs import write_pipeline_run
from instructkit.cli.app import app
from instructkit.errors import InstructkitError
from instructkit.evaluate.backends.hf import HFBackend
from instructkit.evaluate.backends.load import load_backend
from instructkit.models import identity
from instructkit.models.adapters import BASE_FILE, AdapterBaseMismatchError, check_adapter_base
from instructkit.models.pretrained import sha256_of
from instructkit.pipeline.recipe import load_recipe
from instructkit.pipeline.report import write_run_report
from instructkit.pipeline.stage import Stage, hashed_inputs, stage_hash
from instructkit.train.checkpoint import model_identity
from instructkit.train.run import train

FIXTURES = FIXTURES_ROOT / "eval"
ALLOWED = "used anyway (allow_base_mismatch)"


@pytest.fixture
def changed_base(lora_run, tmp_path) -> tuple[Path, Path]:
    """The trained adapter on a copy of its base whose weights then changed."""
    base, adapter = adapter_on_copy(lora_run, tmp_path)
    perturb_weights(base)
    return base, adapter


# ---------------------------------------------------------------- checkpoints carry the record


def test_every_adapter_checkpoint_records_its_base_and_is_checked(lora_run, tmp_path):
    base, out = lora_run
    final = json.loads((out / BASE_FILE).read_text())
    for step in (1, 2):
        assert json.loads((out / f"checkpoint-{step}" / BASE_FILE).read_text()) == final
    copy_base, checkpoint = adapter_on_copy((base, out / "checkpoint-1"), tmp_path)
    assert check_adapter_base(str(checkpoint)) == []
    perturb_weights(copy_base)
    with pytest.raises(AdapterBaseMismatchError, match="was trained on base"):
        HFBackend.from_pretrained(str(checkpoint), dtype="float32")


def test_a_merged_runs_checkpoints_record_their_base(lora_run, tmp_path):
    base, _ = lora_run
    data = prepare_chats(tmp_path, str(base))
    train(lora_config(data, tmp_path / "merged", str(base), merge_lora=True, save_steps=1))
    assert (tmp_path / "merged" / "checkpoint-1" / "adapter_config.json").is_file()  # an adapter
    record = json.loads((tmp_path / "merged" / "checkpoint-1" / BASE_FILE).read_text())
    assert record["reference"] == str(base)


# ---------------------------------------------------------------- eval run: the option and the report


def eval_args(adapter: Path, out: Path) -> list[str]:
    return ["eval", "run", "--model", str(adapter), "--out", str(out), "-t", "boolq"] + [
        "--data-dir",
        str(FIXTURES),
        "--limit",
        "2",
    ]


def test_eval_run_refuses_a_changed_base_unless_allowed_and_reports_the_warning(changed_base, tmp_path):
    _, adapter = changed_base
    refused = CliRunner().invoke(app, eval_args(adapter, tmp_path / "refused"))
    assert isinstance(refused.exception, AdapterBaseMismatchError), refused.output
    assert not (tmp_path / "refused" / "results.json").exists()

    out = tmp_path / "allowed"
    done = CliRunner().invoke(app, [*eval_args(adapter, out), "--allow-base-mismatch"])
    assert done.exit_code == 0, done.output
    results = json.loads((out / "results.json").read_text())
    (warning,) = results["warnings"]
    assert ALLOWED in warning and str(adapter) in warning
    assert results["config"]["allow_base_mismatch"] is True

    reported = CliRunner().invoke(app, ["eval", "report", str(out)])
    assert reported.exit_code == 0, reported.output
    markdown = (out / "report.md").read_text()
    assert "## Warnings" in markdown and f"Warning (allowed): {warning}" in markdown
    assert ALLOWED in (out / "report.html").read_text()


def test_an_unchanged_base_leaves_no_warning(lora_run, tmp_path):
    _, adapter = adapter_on_copy(lora_run, tmp_path)
    done = CliRunner().invoke(app, eval_args(adapter, tmp_path / "run"))
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "run" / "results.json").read_text())["warnings"] == []
    CliRunner().invoke(app, ["eval", "report", str(tmp_path / "run")])
    assert "Warning" not in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize("kind", ["vllm", "openai"])
def test_allowing_a_base_mismatch_is_refused_by_backends_that_cannot_check_it(kind):
    with pytest.raises(
        InstructkitError, match=rf"--allow-base-mismatch is supported by --backend hf only, not '{kind}'"
    ):
        load_backend(kind, "model", allow_base_mismatch=True)


def test_the_run_report_shows_each_evaluations_warnings(tmp_path):
    inputs = write_pipeline_run(tmp_path / "q")
    results_path = inputs["eval-tuned"] / "results.json"
    results = json.loads(results_path.read_text())
    results["warnings"] = [
        "adapter A records no base identity (instructkit_base.json): base 'B' is used unchecked"
    ]
    results_path.write_text(json.dumps(results))
    write_run_report(load_recipe("quickstart")[0], inputs, tmp_path / "q" / "report")
    markdown = (tmp_path / "q" / "report.md").read_text()
    summary = markdown.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert f"Warning ({inputs['eval-tuned'].name}): adapter A records no base identity" in summary
    assert "records no base identity" in (tmp_path / "q" / "report.html").read_text()


# ---------------------------------------------------------------- training on and merging an adapter


def test_continuing_an_adapter_on_a_changed_base_warns_in_the_card_and_config(changed_base, tmp_path):
    base, adapter = changed_base
    data = prepare_chats(tmp_path, str(base))
    out = tmp_path / "more"
    train(lora_config(data, out, str(adapter), allow_base_mismatch=True))
    (warning,) = json.loads((out / "train_config.json").read_text())["warnings"]
    assert ALLOWED in warning and str(adapter) in warning
    card = (out / "README.md").read_text()
    assert "## Warnings" in card and f"- {warning}" in card


def test_merging_an_adapter_onto_a_changed_base_is_refused_before_anything_is_written(changed_base, tmp_path):
    base, adapter = changed_base
    data = prepare_chats(tmp_path, str(base))
    out = tmp_path / "merged"
    with pytest.raises(AdapterBaseMismatchError, match=str(adapter)):
        train(lora_config(data, out, str(adapter), merge_lora=True))
    assert not out.exists()


# ---------------------------------------------------------------- a run's model identity, by content


def test_a_runs_model_identity_is_the_content_of_what_loads(
    lora_run, tmp_path, monkeypatch, saved_tiny_model
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = shutil.copytree(saved_tiny_model, repo / "snapshots" / "0123abcd")
    first = model_identity("org/tiny")
    (snapshot / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")  # same revision
    assert model_identity("org/tiny") != first
    assert model_identity("org/absent") == "hub org/absent@unpinned"

    base, adapter = adapter_on_copy(lora_run, tmp_path)
    before = model_identity(str(adapter))
    perturb_weights(base)  # the adapter folder is unchanged; what it loads onto is not
    assert model_identity(str(adapter)) != before


# ---------------------------------------------------------------- one sha256, the same digests


def test_the_sha256_helper_gives_the_digests_the_old_code_gave(tmp_path, tiny_model):
    import torch

    old = hashlib.sha256()
    for name, tensor in tiny_model.state_dict().items():
        data = tensor.detach().to("cpu").contiguous()
        old.update(f"{name}:{data.dtype}:{tuple(data.shape)}\n".encode())
        old.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    assert identity.state_dict_digest(tiny_model) == old.hexdigest()

    text = "chat {{ template }} – ünïcode"
    assert identity._sha256(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()

    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 9000)  # more than one 1 MiB block
    assert sha256_of(blob) == hashlib.sha256(blob.read_bytes()).hexdigest()

    stage = Stage("train", {"lr": 1e-3, "name": "ü", "path": tmp_path}, ["prepare"], lambda out, inputs: {})
    payload = json.dumps(hashed_inputs(stage, {"prepare": "abc"}), sort_keys=True, default=str)
    assert stage_hash(stage, {"prepare": "abc"}) == hashlib.sha256(payload.encode()).hexdigest()[:16]
