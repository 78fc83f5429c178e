"""Reward accuracy on held-out pairs: reply log-probabilities as training masks them, and the margin's sign."""

from __future__ import annotations

import json

import pytest
import torch

from instructkit.errors import BadRowError
from instructkit.evaluate.reward_accuracy import read_pairs, reply_logps, reward_accuracy


def test_margin_sign_and_policy_equal_to_reference():
    reference = torch.tensor([[-5.0, -5.0], [-3.0, -4.0], [-2.0, -2.0]], dtype=torch.float64)
    policy = reference + torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    result = reward_accuracy(policy, reference, beta=0.5)
    low, high = result.pop("reward_accuracy_ci95")  # bootstrap over the 3 pairs' wins (100, 0, 0)
    assert 0 <= low < 100 / 3 < high <= 100
    # margins: 0.5·(1-0) > 0, 0.5·(0-1) < 0, 0 (a tie is not a win)
    assert result == {
        "reward_accuracy": pytest.approx(100 / 3),
        "reward_margin": pytest.approx(0.0),
        "pairs": 3,
    }
    assert reward_accuracy(reference, reference)["reward_accuracy"] == 0.0


def test_reply_logps_sum_the_reply_tokens_only(tiny_model, tiny_tokenizer, tmp_path):
    path = tmp_path / "pairs.jsonl"
    row = {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "It is 5, I think."}
    path.write_text(json.dumps(row) + "\n")
    pairs = read_pairs(str(path))
    logps = reply_logps(tiny_model, tiny_tokenizer, pairs)
    assert logps.shape == (1, 2) and bool((logps < 0).all())
    # the same number from the model's own loss over the full rendered chat, labels only on the reply
    from instructkit.data.tokenize import ChatTokenizer

    for side, chat in enumerate(pairs[0].chats()):
        (encoded,) = ChatTokenizer(tiny_tokenizer).encode([chat], "assistant")
        labels = torch.tensor([encoded.labels])
        with torch.no_grad():
            loss = tiny_model(input_ids=torch.tensor([encoded.input_ids]), labels=labels).loss
        count = int((labels[0, 1:] != -100).sum())
        assert logps[0, side].item() == pytest.approx(-loss.item() * count, rel=1e-5)


def test_bad_heldout_row_names_file_row_and_field(tmp_path):
    path = tmp_path / "heldout.jsonl"
    path.write_text(
        json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"})
        + "\n"
        + json.dumps({"prompt": "q"})
        + "\n"
    )
    with pytest.raises(BadRowError, match="chosen") as info:
        read_pairs(str(path))
    assert str(path) in str(info.value) and ":2" in str(info.value)
