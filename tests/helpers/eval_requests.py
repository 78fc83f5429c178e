"""Log-likelihood requests and their one-at-a-time reference scores (a full forward pass each)."""

from __future__ import annotations

import torch

from instructkit.evaluate.backends.hf import HFBackend
from instructkit.evaluate.requests import LoglikelihoodRequest

CHOICES = [" yes", " no thanks", " maybe later today, friend", " 4"]


def loglikelihood_alone(model, backend: HFBackend, req: LoglikelihoodRequest) -> float:
    ctx, cont = backend.encode_pair(req.context, req.continuation)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].float(), -1)
    return sum(logprobs[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))
