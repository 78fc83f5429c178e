"""A path is a path (issue #26, part 1): one rule tells a local path from a hub id; a path that does not
exist is "no such file or folder" at once; an unreachable hub is said after one failed request; an
adapter-only LoRA folder (adapter_config.json + weights, no tokenizer) works as model and tokenizer,
its base resolved like any reference, a `pretrained:` base kept as a name.

Tiny models (seconds); the `pretrained:` case uses the fetched SmolLM2 (skipped when absent); the
unreachable hub is a refused local port, in a subprocess with HF_HUB_OFFLINE unset.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.chats import CHATS, lora_config, prepare_chats
from helpers.files import write_jsonl
from instructkit.data.sources import expand_sources, iter_source_rows
from instructkit.errors import HubUnreachableError
from instructkit.evaluate.backends.hf import HFBackend
from instructkit.hub import NoSuchPathError, path_reason
from instructkit.models.adapters import BASE_FILE, check_adapter_base
from instructkit.models.loading import (
    load_causal_lm,
    load_config,
    load_model,
    load_tokenizer,
    model_max_positions,
)
from instructkit.train.lora import apply_lora
from instructkit.train.run import train

HUB_IDS = ["Qwen/Qwen2.5-0.5B", "gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct", "org/m.v1"]
PATHS = ["runs/sft/x", "./runs/sft", "~/models/m", "/no/such/model", "data/x.jsonl", "x.JSONL.gz", "m.gguf"]
PATHS += ["my model", "runs\\sft", "org/name:cfg"]


@pytest.mark.parametrize("reference", HUB_IDS)
def test_hub_ids_read_as_hub_ids(reference):
    assert path_reason(reference) is None


@pytest.mark.parametrize("reference", PATHS)
def test_paths_read_as_paths(reference):
    assert path_reason(reference)


def test_a_dataset_id_keeps_its_config_and_split_tail():
    assert path_reason("org/name:cfg@test", dataset=True) is None
    assert path_reason("data/x.jsonl@train", dataset=True) == "it ends in .jsonl"
    assert path_reason("runs/a/b:cfg", dataset=True)


@pytest.mark.parametrize("load", [load_tokenizer, load_causal_lm, load_config, load_model])
@pytest.mark.parametrize("reference", ["runs/sft/x", "./runs/sft", "data/x.jsonl"])
def test_a_missing_model_path_is_no_such_file_at_once(load, reference, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    with pytest.raises(NoSuchPathError, match=f"^no such file or folder: {reference.replace('.', '[.]')} "):
        load(reference)
    assert time.perf_counter() - started < 1  # no hub request, no retries


def test_a_missing_hub_shaped_folder_says_it_was_read_as_a_hub_id(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # HF_HUB_OFFLINE=1 (conftest): the hub is "unreachable" at once
    with pytest.raises(
        HubUnreachableError, match="'runs/sft' is no file or folder here, so it was read as a hub id"
    ):
        load_tokenizer("runs/sft")


def test_a_missing_data_path_is_refused_before_any_source_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = write_jsonl(tmp_path / "real.jsonl", CHATS)
    for missing in ["data/train.jsonl", "runs/a/b", "./nope"]:
        with pytest.raises(NoSuchPathError, match=f"no such file or folder: {missing}"):
            expand_sources([real, missing])
        with pytest.raises(NoSuchPathError, match="the data source"):
            list(iter_source_rows(missing))
    assert expand_sources([real]) == ([(real, False)], [])


UNREACHABLE = """
import time
import datasets, transformers  # imported before the clock starts: only the hub's answer is timed
from transformers import AutoModelForCausalLM, AutoTokenizer
from instructkit.hub import load_hub_dataset
from instructkit.models.loading import load_causal_lm, load_tokenizer
for name, call in [("tokenizer", lambda: load_tokenizer("org/model")), ("model", lambda: load_causal_lm("org/model")),
                   ("dataset", lambda: load_hub_dataset("org/data", None, "train"))]:
    started = time.perf_counter()
    try:
        call()
    except Exception as exc:
        print(name, round(time.perf_counter() - started, 2), type(exc).__name__, exc, flush=True)
"""


def test_an_unreachable_hub_is_said_after_one_failed_request(tmp_path):
    """Offline mode unset, the endpoint a refused port: huggingface_hub alone retries 5 times (~25-56 s)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env |= {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", UNREACHABLE], env=env, capture_output=True, text=True, timeout=300
    )
    lines = [
        line for line in done.stdout.splitlines() if line.split(" ")[0] in ("tokenizer", "model", "dataset")
    ]
    assert len(lines) == 3, done.stdout + done.stderr
    for line in lines:
        _, seconds, error = line.split(" ", 3)[:3]
        assert error == "HubUnreachableError" and "cannot be reached" in line, line
        assert float(seconds) < 5, line  # one refused request, not five retries with backoff
    assert "Retrying in" not in done.stderr


# ---------------------------------------------------------------- adapter-only folders


@pytest.fixture(scope="module")
def adapter_only(tmp_path_factory, saved_tiny_model) -> tuple[Path, Path, torch.nn.Module]:
    """(base folder, adapter-only folder, the PEFT model it was saved from): as adapters ship on the hub."""
    root = tmp_path_factory.mktemp("adapter_only")
    base = shutil.copytree(saved_tiny_model, root / "base")
    peft_model = apply_lora(load_causal_lm(str(base)), r=4, dropout=0.0, target_modules=["q_proj", "v_proj"])
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:  # B starts at zero: make the adapter change something
                parameter.normal_(0, 0.5)
    peft_model.save_pretrained(root / "adapter")
    assert not any(
        (root / "adapter" / f).exists() for f in ("config.json", "tokenizer.json", "tokenizer_config.json")
    )
    return base, root / "adapter", peft_model.eval()


def test_an_adapter_only_folder_loads_as_model_and_tokenizer(adapter_only, tiny_tokenizer):
    base, adapter, peft_model = adapter_only
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    ids = torch.tensor([tiny_tokenizer.encode("What is 1 plus 2?")])
    loaded = load_model(str(adapter), dtype=torch.float32).eval()
    with torch.no_grad():
        expected, got = peft_model(input_ids=ids).logits, loaded(input_ids=ids).logits
        plain = load_model(str(base), dtype=torch.float32)(input_ids=ids).logits
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, plain)  # the adapter was applied, not just the base loaded
    assert load_tokenizer(str(adapter)).get_vocab() == tiny_tokenizer.get_vocab()  # the base's tokenizer
    assert model_max_positions(str(adapter)) == load_config(str(base)).max_position_embeddings


def test_an_adapter_only_folder_works_in_prepare_eval_and_train(adapter_only, tmp_path):
    base, adapter, _ = adapter_only
    data = prepare_chats(tmp_path, str(adapter))  # --tokenizer ADAPTER: the base's tokenizer
    assert json.loads((data / "tokenizer" / "tokenizer_config.json").read_text())
    backend = HFBackend.from_pretrained(str(adapter), dtype="float32")  # eval --model ADAPTER
    assert backend.encode("1 plus 2") == load_tokenizer(str(base)).encode("1 plus 2")
    # train --model ADAPTER continues that adapter (its own q/v targets; another target list is refused)
    result = train(
        lora_config(data, tmp_path / "more", str(adapter), lora_target_modules=["q_proj", "v_proj"])
    )
    assert result.global_step == 1


def test_an_adapter_missing_its_base_names_the_base(adapter_only, tmp_path):
    _, adapter, _ = adapter_only
    moved = shutil.copytree(adapter, tmp_path / "adapter")
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "runs/gone/base"
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(NoSuchPathError, match="no such file or folder: runs/gone/base"):
        load_model(str(moved))
    with pytest.raises(NoSuchPathError, match="no such file or folder: runs/gone/base"):
        load_tokenizer(str(moved))


@pytest.mark.slow  # trains one LoRA step on the real 135M model (about 20 s on 2 CPU cores)
def test_a_lora_on_a_pretrained_base_records_the_name_and_loads_anywhere(smollm2, tmp_path):
    """adapter_config.json says `pretrained:NAME`, not this machine's cache path; it loads through models."""
    name = "pretrained:smollm2-135m-instruct"
    data = prepare_chats(tmp_path, name)
    out = tmp_path / "adapter"
    train(lora_config(data, out, name))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == name
    assert str(smollm2.directory) not in (out / "adapter_config.json").read_text()
    assert json.loads((out / BASE_FILE).read_text())["reference"] == name
    assert check_adapter_base(str(out)) == []  # the recorded base digest matches the named base
    for tokenizer_file in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (out / tokenizer_file).unlink(missing_ok=True)  # as it would ship on the hub: no tokenizer
    assert load_tokenizer(str(out)).get_vocab() == load_tokenizer(name).get_vocab()
    model = load_model(str(out), dtype=torch.float32)
    assert any("lora_A" in n for n, _ in model.named_parameters())
