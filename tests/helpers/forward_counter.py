"""Counts a model's forward passes and the input tokens they were fed (a pre-hook, removed on exit)."""

from __future__ import annotations


class ForwardCounter:
    """`with ForwardCounter(model) as counter:` then `counter.passes` and `counter.tokens` (batch × width)."""

    def __init__(self, model):
        self.model, self.passes, self.tokens = model, 0, 0

    def __enter__(self):
        def count(_module, _args, kwargs):
            self.passes += 1
            self.tokens += kwargs["input_ids"].numel()

        self.handle = self.model.register_forward_pre_hook(count, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
