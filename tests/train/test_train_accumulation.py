"""One optimizer step split as 1×8, 2×4 or 8×1 micro-batches gives the same loss, gradient and update.

The loss is the mean over the trainable tokens of the whole step (Trainer's `num_items_in_batch`
plus our token-sum loss), not a mean of per-micro-batch means; the last test shows the two differ
on this data, so the equality is not an accident. The runs use the `flan` preset (Adafactor): AdamW
divides each element by its own gradient magnitude, so float-rounding noise in near-zero gradients
becomes an lr-sized update and would hide what we test; Adafactor's factored second moment does not.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from helpers.prepared import mixed_dir
from instructkit.train.config import TrainConfig
from instructkit.train.run import train

SPLITS = [(1, 8), (2, 4), (8, 1)]  # (rows per micro-batch, accumulation steps)


@pytest.fixture(scope="module")
def data16(tmp_path_factory, tiny_tokenizer):
    """About 24 packed rows (capacity 40) carrying 4 to 9 trainable tokens each."""
    return mixed_dir(tmp_path_factory.mktemp("acc") / "data", tiny_tokenizer, n=48, max_length=40)


@pytest.fixture(scope="module")
def runs(data16, tmp_path_factory):
    out = {}
    for micro, accum in SPLITS:
        cfg = TrainConfig(
            data=data16,
            output_dir=tmp_path_factory.mktemp(f"run{micro}x{accum}"),
            model="tiny:nano",
            micro_batch_size=micro,
            gradient_accumulation_steps=accum,
            max_steps=2,
            logging_steps=1,
            save_steps=100,
            progress=False,
            preset="flan",
            max_grad_norm=0.0,
        )
        result = train(cfg)
        rows = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
        out[(micro, accum)] = (rows, load_file(str(result.output_dir / "model.safetensors")))
    return out


def test_same_loss_grad_norm_and_update_for_every_split(runs):
    base_rows, base_weights = runs[SPLITS[0]]
    for split in SPLITS[1:]:
        rows, weights = runs[split]
        for a, b in zip(base_rows, rows):
            assert a["trainable_tokens"] == b["trainable_tokens"]
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        for name, w in base_weights.items():
            assert torch.allclose(w, weights[name], rtol=1e-4, atol=1e-6), (split, name)


def test_mean_of_micro_batch_means_would_differ(data16, tiny_tokenizer):
    """On this data a mean of per-row means is a different number from the token mean the step uses."""
    import datasets

    from instructkit.models.tiny import build_tiny_model
    from instructkit.train.collators import PackedCollator
    from instructkit.train.trainer import causal_lm_loss

    model = build_tiny_model("tiny:nano", tiny_tokenizer, seed=0).eval()
    rows = datasets.load_from_disk(str(data16))
    sums, counts = [], []
    with torch.no_grad():
        for row in rows:
            batch = PackedCollator()([row])
            n = int(batch["labels"][:, 1:].ne(-100).sum())
            out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
            sums.append(causal_lm_loss(out, batch["labels"], n).item() * n)
            counts.append(n)
    token_mean = sum(sums) / sum(counts)
    mean_of_means = sum(s / c for s, c in zip(sums, counts)) / len(counts)
    assert abs(token_mean - mean_of_means) / token_mean > 1e-4
