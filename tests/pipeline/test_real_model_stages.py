"""The real model (SmolLM2-135M-Instruct) through the later stages: LoRA with tied embeddings, merged or
adapter-only, loaded back for evaluation; `pretrained:` references; one BOS whoever adds it; the
model's generation_config stop ids; the real model as a synthesizer backbone.

Uses the session fixture `smollm2` (skipped, saying why, when the model cannot be had). Texts are a
few dozen tokens and training runs one optimizer step, so each test takes seconds on 2 CPU cores.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from tokenizers.processors import TemplateProcessing

from helpers.files import write_jsonl
from instructkit.data.prepare import PrepareConfig, prepare
from instructkit.errors import InstructkitError
from instructkit.evaluate.backends.hf import HFBackend
from instructkit.evaluate.requests import GenerationRequest, LoglikelihoodRequest
from instructkit.models.identity import tokenizer_identity
from instructkit.models.loading import load_causal_lm, load_tokenizer
from instructkit.models.tiny import build_tiny_model, train_tiny_tokenizer
from instructkit.pipeline.inputs import reference_inputs
from instructkit.synth.generate import GenerateConfig, generate_pairs
from instructkit.train.config import TrainConfig
from instructkit.train.run import train

pytestmark = pytest.mark.slow

REF = "pretrained:smollm2-135m-instruct"
CHATS = [
    {
        "messages": [
            {"role": "user", "content": "What is 2 plus 3?"},
            {"role": "assistant", "content": "2 plus 3 is 5."},
        ]
    },
    {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red."}]},
]
ALPACA = [{"instruction": "Say hello in French.", "input": "", "output": "Bonjour."}]


@pytest.fixture(scope="module")
def mixed_data(smollm2, tmp_path_factory):
    """Two files in two formats, prepared with the real tokenizer named by its `pretrained:` reference."""
    root = tmp_path_factory.mktemp("smol_stages")
    sources = [write_jsonl(root / "chats.jsonl", CHATS), write_jsonl(root / "alpaca.jsonl", ALPACA)]
    out = root / "prepared"
    prepare(PrepareConfig(sources=sources, tokenizer=REF, out=str(out), max_length=96), progress=False)
    return out


@pytest.fixture(scope="module")
def base_model(smollm2):
    """The fetched model in fp32, eval mode, loaded once for the tests that only read it."""
    return load_causal_lm(str(smollm2.directory), dtype=torch.float32).eval()


def lora_one_step(data, out, merge: bool) -> None:
    """One LoRA step (q/v adapters) on the real model, named by reference; merged or adapters only."""
    config = TrainConfig(
        data=data,
        output_dir=out,
        model=REF,
        method="lora",
        lora_target_modules=["q_proj", "v_proj"],
        learning_rate=1e-3,
        warmup_ratio=0.0,  # else the one step runs at warm-up's learning rate 0 and changes nothing
        merge_lora=merge,
        max_steps=1,
        gradient_accumulation_steps=1,
        progress=False,
        precision="fp32",
    )
    assert train(config).global_step == 1


def choice_logprobs(backend: HFBackend) -> list[float]:
    requests = [LoglikelihoodRequest("The capital of France is", c) for c in (" Paris", " Rome")]
    return [r.logprob for r in backend.loglikelihood(requests)]


def test_pretrained_reference_resolves_to_the_fetched_model_and_is_pinned(smollm2):
    assert tokenizer_identity(load_tokenizer(REF)) == tokenizer_identity(
        load_tokenizer(str(smollm2.directory))
    )
    (label, digest), *rest = reference_inputs("model", REF, "model").items()
    assert not rest and label == f"model {REF}" and digest.startswith("sha256:") and len(digest) == 71
    with pytest.raises(InstructkitError, match="unknown pretrained model; known: smollm2-135m-instruct"):
        load_tokenizer("pretrained:gpt-5")


def test_merged_lora_keeps_tied_embeddings_and_loads_for_eval(base_model, mixed_data, tmp_path):
    out = tmp_path / "merged"
    lora_one_step(mixed_data, out, merge=True)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys  # saved once, tied
    assert not any("lora_" in k for k in keys)
    backend = HFBackend.from_pretrained(str(out), dtype="float32")  # what `eval run --model DIR` does
    model = backend.model
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    layer, base_layer = model.model.layers[0].self_attn, base_model.model.layers[0].self_attn
    assert not torch.equal(layer.q_proj.weight, base_layer.q_proj.weight)  # the adapter was merged in
    assert torch.equal(layer.k_proj.weight, base_layer.k_proj.weight)  # untargeted weights unchanged
    paris, rome = choice_logprobs(backend)
    assert paris > rome  # still the pretrained model after one small step
    card = (out / "README.md").read_text()
    assert "| input_format | mixed |" in card
    assert "alpaca: 1 file, 1 rows kept of 1 (alpaca.jsonl)" in card
    assert "messages: 1 file, 2 rows kept of 2 (chats.jsonl)" in card


def test_adapter_only_output_loads_for_eval_with_its_adapter(smollm2, mixed_data, tmp_path):
    out = tmp_path / "adapter"
    lora_one_step(mixed_data, out, merge=False)
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    tuned = HFBackend.from_pretrained(str(out), dtype="float32")
    assert any("lora_" in name for name, _ in tuned.model.named_parameters())
    base = HFBackend.from_pretrained(str(smollm2.directory), dtype="float32")
    assert choice_logprobs(tuned) != choice_logprobs(base)


def bos_adding(tokenizer):
    """The tokenizer made to prepend its BOS itself, as Llama tokenizers (and some GGUF files) do."""
    bos = tokenizer.bos_token
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    assert tokenizer("hi").input_ids[0] == tokenizer.bos_token_id
    return tokenizer


def assert_one_bos(tokenizer, model, tmp_path, template: str | None) -> None:
    """Prepared rows and evaluation prompts start with exactly one BOS, though template and tokenizer add it."""
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    source = write_jsonl(tmp_path / "chats.jsonl", CHATS)
    out = tmp_path / "prepared"
    prepare(
        PrepareConfig(
            sources=[source],
            tokenizer=str(tmp_path / "tok"),
            chat_template=template,
            out=str(out),
            max_length=96,
        ),
        progress=False,
    )
    import datasets

    bos = tokenizer.bos_token_id
    for row in datasets.load_from_disk(str(out)):
        assert row["input_ids"][0] == bos and row["input_ids"][1] != bos
    prepared_tok = load_tokenizer(str(out / "tokenizer"))
    backend = HFBackend(model, bos_adding(prepared_tok))
    ids = backend.encode(backend.render_chat([{"role": "user", "content": "Name a colour."}]))
    assert ids[0] == bos and ids[1] != bos
    context, _ = backend.encode_pair(backend.render_chat([{"role": "user", "content": "Hi"}]), "Red")
    assert context[0] == bos and context[1] != bos


def test_one_bos_with_the_real_template_and_a_bos_adding_tokenizer(base_model, tmp_path):
    tokenizer = bos_adding(load_tokenizer(REF))
    assert_one_bos(tokenizer, base_model, tmp_path, None)  # ChatML starts with <|im_start|>, its BOS


def test_one_bos_with_a_llama3_template_and_a_bos_adding_tokenizer(tiny_tokenizer, tmp_path):
    tokenizer = bos_adding(
        train_tiny_tokenizer(["Name a colour. Red. What is 2 plus 3?"] * 20, 300, "llama3")
    )
    model = build_tiny_model("tiny:nano", tokenizer).eval()
    assert_one_bos(tokenizer, model, tmp_path, "llama3")


def test_generation_stops_at_every_eos_id_of_the_generation_config(tiny_tokenizer):
    model = build_tiny_model("tiny:nano", tiny_tokenizer, seed=3).eval()
    backend = HFBackend(model, tiny_tokenizer)
    request = GenerationRequest("What is 12 plus 35?", max_new_tokens=6)
    free = backend.generate([request])[0][0]
    assert free.num_tokens == 6  # a random model: it never emits its EOS within 6 tokens
    first = backend.encode(request.prompt)
    with torch.no_grad():
        next_id = int(model(torch.tensor([first])).logits[0, -1].argmax())
    assert next_id != tiny_tokenizer.eos_token_id
    model.generation_config.eos_token_id = [tiny_tokenizer.eos_token_id, next_id]  # e.g. Llama 3's two
    stopped = HFBackend(model, tiny_tokenizer).generate([request])[0][0]
    assert stopped.num_tokens == 1 and stopped.text == ""


def test_real_model_as_synthesizer_gives_pairs_or_counted_failures_per_text(smollm2, tmp_path):
    texts = [
        {"text": "The Eiffel Tower was built in Paris for the world's fair of 1889."},
        {"text": "Water boils at 100 degrees Celsius at sea level."},
    ]
    source = write_jsonl(tmp_path / "texts.jsonl", texts)
    cfg = GenerateConfig(
        model=REF, input=source, out=str(tmp_path / "pairs"), rounds=1, max_new_tokens=12, max_model_len=256
    )
    summary = generate_pairs(cfg)
    assert summary["texts"] == 2 and summary["complete"]
    records = [json.loads(line) for p in sorted((tmp_path / "pairs").rglob("*.jsonl")) for line in p.open()]
    assert len(records) == 2
    for record in records:  # the instruct model does not know the synthesizer format: each failure counted
        assert record["output"].strip()
        assert record["pairs"] or sum(record["failures"].values()) >= 1
    failures = sum(summary["parse_failures"].values())
    assert summary["pairs"] + failures >= 2
