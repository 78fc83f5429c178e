"""`objective: dpo`: per-sequence log-probs of packed pair rows equal each sequence run alone, each loss
equals its formula (TRL's), the reference pass is cached by model and data content, the loss falls on a
tiny model with rewards logged, and a resumed run repeats the uninterrupted one exactly."""

from __future__ import annotations

import json
import math
import random
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.files import write_jsonl
from instructkit.data.prepare import PrepareConfig, prepare
from instructkit.errors import InstructkitError
from instructkit.models.tiny import build_tiny_model
from instructkit.train import attention  # noqa: F401  (registers instructkit_docs)
from instructkit.train.attention import DOCS
from instructkit.train.collators import PreferenceCollator
from instructkit.train.config import TrainConfig
from instructkit.train.preference import pair_losses, reference_key, sequence_logps
from instructkit.train.run import train

# --- each loss is its formula -----------------------------------------------------------------------

C, R = torch.tensor([-3.0, -10.0, -4.5]), torch.tensor([-5.0, -8.0, -4.0])  # summed policy log-probs
RC, RR = torch.tensor([-3.5, -9.0, -5.0]), torch.tensor([-4.0, -9.5, -4.2])  # reference
NC, NR = torch.tensor([3.0, 5.0, 2.0]), torch.tensor([4.0, 2.0, 2.0])  # labelled tokens


def _settings(**kw):
    return TrainConfig(data="d", output_dir="o", objective="dpo", **kw)


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def _expected(kind: str, i: int, beta=0.1, gamma=0.5, lam=0.1, smooth=0.0) -> tuple[float, float, float]:
    c, r, rc, rr, nc, nr = (float(t[i]) for t in (C, R, RC, RR, NC, NR))
    if kind == "sigmoid":
        d = beta * ((c - rc) - (r - rr))
        return -_logsig(d) * (1 - smooth) - _logsig(-d) * smooth, beta * (c - rc), beta * (r - rr)
    if kind == "ipo":
        return ((c - rc) / nc - (r - rr) / nr - 1 / (2 * beta)) ** 2, beta * (c - rc), beta * (r - rr)
    if kind == "dpo_norm":
        return -_logsig(beta * ((c - rc) / nc - (r - rr) / nr)), beta * (c - rc), beta * (r - rr)
    if kind == "simpo":
        d = beta * (c / nc - r / nr) - gamma
        return -_logsig(d) * (1 - smooth) - _logsig(-d) * smooth, beta * c / nc, beta * r / nr
    ac, ar = c / nc, r / nr
    log_odds = (ac - ar) - (math.log(1 - math.exp(ac)) - math.log(1 - math.exp(ar)))
    return -lam * _logsig(log_odds), lam * ac, lam * ar


@pytest.mark.parametrize(
    "kind, kw",
    [
        ("sigmoid", {}),
        ("sigmoid", {"beta": 0.5, "smooth": 0.2}),
        ("ipo", {"beta": 0.3}),
        ("dpo_norm", {"beta": 5.0}),
        ("simpo", {"beta": 2.0, "gamma": 1.0, "smooth": 0.1}),
        ("orpo", {"lam": 0.25}),
    ],
)
def test_each_loss_equals_its_formula(kind, kw):
    names = {"beta": "beta", "gamma": "simpo_gamma", "lam": "orpo_lambda", "smooth": "label_smoothing"}
    cfg = _settings(dpo_loss=kind, **{names[k]: v for k, v in kw.items()})
    losses, chosen, rejected = pair_losses(cfg, C, R, NC, NR, RC, RR)
    for i in range(3):
        want = _expected(kind, i, **kw)
        got = (float(losses[i]), float(chosen[i]), float(rejected[i]))
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_reference_losses_refuse_to_run_without_the_reference():
    with pytest.raises(InstructkitError, match="reference"):
        pair_losses(_settings(dpo_loss="sigmoid"), C, R, NC, NR)


# --- packed = alone ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs_model(tiny_tokenizer):
    model = build_tiny_model("tiny:nano", tiny_tokenizer, seed=1).float().eval()
    model.set_attn_implementation(DOCS)
    return model


def _sequence(rng: random.Random, vocab: int) -> tuple[list[int], list[int]]:
    n = rng.randint(3, 14)
    ids = [rng.randrange(5, vocab) for _ in range(n)]
    start = rng.randint(1, n - 1)  # a prompt of >= 1 token, then a labelled reply
    return ids, [-100] * start + ids[start:]


@settings(max_examples=15, deadline=None)
@given(pairs=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_packed_sequence_logps_equal_each_sequence_alone(docs_model, pairs, seed):
    rng = random.Random(seed)
    vocab = docs_model.get_input_embeddings().num_embeddings
    seqs = [_sequence(rng, vocab) for _ in range(2 * pairs)]
    row = {
        "input_ids": [t for ids, _ in seqs for t in ids],
        "labels": [t for _, labels in seqs for t in labels],
        "position_ids": [p for ids, _ in seqs for p in range(len(ids))],
        "seq_lens": [len(ids) for ids, _ in seqs],
        "pair_ids": [k // 2 for k in range(2 * pairs)],
        "sides": [k % 2 for k in range(2 * pairs)],
    }
    with torch.no_grad():
        packed = sequence_logps(docs_model, PreferenceCollator()([row])).logps
        for k, (ids, labels) in enumerate(seqs):
            alone = {
                "input_ids": torch.tensor([ids]),
                "labels": torch.tensor([labels]),
                "position_ids": torch.arange(len(ids))[None],
                "seq_lens": torch.tensor([len(ids)]),
            }
            single = sequence_logps(docs_model, alone).logps[0]
            assert abs(float(packed[k]) - float(single)) < 1e-5
            logits = docs_model(input_ids=torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
            direct = sum(float(logits[i - 1, ids[i]]) for i in range(1, len(ids)) if labels[i] != -100)
            assert abs(float(single) - direct) < 1e-4


# --- training -----------------------------------------------------------------------------------------


def _pairs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 5)))
        wrong = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 5)))
        rows.append({"prompt": f"Repeat {digits}.", "chosen": digits, "rejected": wrong + " no"})
    return rows


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("dpo")
    tiny_tokenizer.save_pretrained(root / "tok")
    src = write_jsonl(root / "pairs.jsonl", _pairs(24, 0))
    out = root / "data"
    prepare(
        PrepareConfig(sources=[src], out=str(out), tokenizer=str(root / "tok"), max_length=48, pack=True),
        False,
    )
    return out


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _config(data, out, **kw) -> TrainConfig:
    base = dict(
        data=data,
        output_dir=out,
        model="tiny:nano",
        objective="dpo",
        max_steps=12,
        gradient_accumulation_steps=2,
        logging_steps=1,
        save_steps=4,
        progress=False,
        learning_rate=3e-3,
    )
    return TrainConfig(**{**base, **kw})


def _metrics(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_dpo_loss_falls_and_rewards_are_logged_every_step(pair_data, tmp_path, own_cache):
    result = train(_config(pair_data, tmp_path / "run"))
    rows = _metrics(result.metrics_path)
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy = reference at step 0
    for r in rows:
        assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= r.keys()
        assert r["rewards/margins"] == pytest.approx(r["rewards/chosen"] - r["rewards/rejected"], abs=1e-6)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.05
    assert rows[-1]["rewards/margins"] > 0
    assert len(list((own_cache / "reference_logps").glob("*.npy"))) == 1


def test_reference_free_loss_needs_no_reference_pass(pair_data, tmp_path, own_cache):
    result = train(_config(pair_data, tmp_path / "run", dpo_loss="simpo", max_steps=3, beta=2.0))
    rows = _metrics(result.metrics_path)
    assert len(rows) == 3 and all("rewards/accuracies" in r for r in rows)
    assert not (own_cache / "reference_logps").exists()


def test_reference_cache_is_reused_and_keyed_by_model_and_data(pair_data, tmp_path, tiny_tokenizer, capfd):
    train(_config(pair_data, tmp_path / "a", max_steps=1))
    assert "computed" in capfd.readouterr().err
    train(_config(pair_data, tmp_path / "b", max_steps=1))
    assert "read from the cache" in capfd.readouterr().err

    model = build_tiny_model("tiny:nano", tiny_tokenizer)
    key = reference_key(_config(pair_data, tmp_path / "x"), model)
    assert reference_key(_config(pair_data, tmp_path / "y"), model) == key  # the output folder is no part
    assert reference_key(_config(pair_data, tmp_path / "x", tiny_seed=1), model) != key  # other weights
    assert reference_key(_config(pair_data, tmp_path / "x", model="tiny:micro"), model) != key
    other = tmp_path / "data2"
    shutil.copytree(pair_data, other)
    assert reference_key(_config(other, tmp_path / "x"), model) == key  # same content, other folder
    (other / "stats.json").write_text("{}")
    assert reference_key(_config(other, tmp_path / "x"), model) != key  # data changed


def test_dpo_refuses_sft_data_and_sft_refuses_pairs(pair_data, tmp_path):
    with pytest.raises(InstructkitError, match="--objective dpo"):
        train(_config(pair_data, tmp_path / "a", objective="sft"))


def test_resume_repeats_the_uninterrupted_run_exactly(pair_data, tmp_path):
    out = tmp_path / "run"
    full = _metrics(train(_config(pair_data, out, max_steps=8, save_total_limit=3)).metrics_path)
    shutil.rmtree(out / "checkpoint-8")  # as if stopped after checkpoint-4 was written
    resumed = train(_config(pair_data, out, max_steps=8, save_total_limit=3, resume=True))
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "checkpoint-4"
    again = _metrics(resumed.metrics_path)
    assert [r["step"] for r in again] == list(range(1, 9))
    keys = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies")
    assert [[r[k] for k in keys] for r in again] == [[r[k] for k in keys] for r in full]


def test_lora_dpo_starts_at_the_base_reference_and_trains(pair_data, tmp_path):
    result = train(_config(pair_data, tmp_path / "lora", method="lora", max_steps=4, learning_rate=1e-2))
    rows = _metrics(result.metrics_path)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert rows[-1]["loss"] != rows[0]["loss"]


def test_lora_reference_is_the_policy_before_training(pair_data, tiny_tokenizer, tmp_path):
    """A fresh adapter's reference is the base (lora_B = 0); a continued adapter's is that adapter."""
    import datasets
    from transformers import TrainingArguments

    from instructkit.train.lora import apply_lora
    from instructkit.train.preference import PreferenceTrainer, compute_reference_logps

    rows = datasets.load_from_disk(str(pair_data)).select(range(2))
    collator = PreferenceCollator()
    model = build_tiny_model("tiny:nano", tiny_tokenizer, seed=2).float()
    model.set_attn_implementation(DOCS)
    with torch.no_grad():
        base = torch.cat([sequence_logps(model, collator([r])).logps for r in rows])
    model = apply_lora(model, 4, 8, 0.0, "all-linear")
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = PreferenceTrainer(model=model, args=args, packed=True, settings=_settings())
    fresh = compute_reference_logps(trainer, rows, collator)
    assert torch.allclose(torch.from_numpy(fresh).float(), base, atol=1e-5)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a continued adapter that changes the outputs
        adapted = torch.cat([sequence_logps(model, collator([r])).logps for r in rows])
    assert (adapted - base).abs().max() > 1e-2
    continued = compute_reference_logps(trainer, rows, collator)
    assert torch.allclose(torch.from_numpy(continued).float(), adapted, atol=1e-5)
