"""Reward accuracy on held-out preference pairs: how often the policy's implicit DPO reward prefers `chosen`.

The implicit reward of a reply is β · (log π(reply | prompt) − log π_ref(reply | prompt)); a pair is
won when chosen's reward exceeds rejected's (margin > 0). Log-probabilities sum each reply's labelled
tokens exactly as training masks them (`ChatTokenizer`: the reply and its end-of-turn token), one
sequence at a time. With the policy equal to the reference every margin is 0, so accuracy is 0 before
training, as TRL's `rewards/accuracies` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..data.preference import Preference, to_preference
from ..data.prepared import IGNORE_INDEX
from ..data.tokenize import ChatTokenizer
from ..errors import BadRowError, InstructkitError


def read_pairs(path: str) -> list[Preference]:
    """Preference rows of a JSONL file (any shape `data prepare` reads); a bad row names file, row and field."""
    import json

    from ..data.conversation import ConversationError

    pairs = []
    with open(path, encoding="utf-8") as handle:
        for i, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                pairs.append(to_preference(json.loads(line), path, i - 1))
            except ConversationError as exc:
                raise BadRowError(path, i, exc.field, exc.reason) from None
    return pairs


@torch.no_grad()
def reply_logps(model: Any, tokenizer: Any, pairs: Sequence[Preference]) -> torch.Tensor:
    """[pairs, 2]: summed log-probabilities of the chosen and the rejected reply under `model`."""
    chat_tok = ChatTokenizer(
        tokenizer
    )  # the template the data was prepared with (pipeline: prepare/tokenizer)
    chats = [chat for pair in pairs for chat in pair.chats()]
    out = torch.zeros(len(chats), dtype=torch.float64)
    device = next(model.parameters()).device
    for k, encoded in enumerate(chat_tok.encode(chats, "assistant")):
        if isinstance(encoded, Exception):
            raise InstructkitError(f"pair {k // 2}: {encoded}")
        ids = torch.tensor([encoded.input_ids], device=device)
        labels = torch.tensor(encoded.labels[1:], device=device)
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
        keep = labels.ne(IGNORE_INDEX)
        token_logps = torch.log_softmax(logits[keep], -1).gather(1, labels[keep, None]).squeeze(1)
        out[k] = token_logps.sum().double().cpu()
    return out.view(-1, 2)


def reward_accuracy(policy: torch.Tensor, reference: torch.Tensor, beta: float = 0.1) -> dict[str, float]:
    """From [pairs, 2] reply log-probabilities of the policy and the reference: accuracy (%) and mean margin."""
    if policy.shape != reference.shape or policy.numel() == 0:
        raise InstructkitError(
            f"reward accuracy needs the same non-empty pairs, got {tuple(policy.shape)} "
            f"and {tuple(reference.shape)}"
        )
    from .metrics import bootstrap_ci

    rewards = beta * (policy - reference)
    margins = rewards[:, 0] - rewards[:, 1]
    wins = [100.0 * float(m > 0) for m in margins]
    return {
        "reward_accuracy": 100 * float((margins > 0).double().mean()),
        "reward_accuracy_ci95": list(bootstrap_ci(wins)),  # percentile bootstrap over the held-out pairs
        "reward_margin": float(margins.mean()),
        "pairs": int(margins.numel()),
    }
