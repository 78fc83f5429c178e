"""The OpenAI-compatible backend against a loopback server that answers from the tiny model."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from instructkit.evaluate.backends.hf import HFBackend
from instructkit.evaluate.backends.openai_compat import OpenAICompatBackend
from instructkit.evaluate.requests import GenerationRequest, LoglikelihoodRequest


def _handler(model, tokenizer):
    hf = HFBackend(model, tokenizer)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reply = self._echo(body) if body.get("echo") else self._complete(body)
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _echo(self, body):
            enc = tokenizer(body["prompt"], return_offsets_mapping=True)
            ids = enc["input_ids"]
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
            token_lps = [None] + [logprobs[i - 1, t].item() for i, t in enumerate(ids) if i]
            tokens = [tokenizer.decode([t]) for t in ids]
            tops = [None] + [
                {tokenizer.decode([int(logprobs[i - 1].argmax())]): 0.0} for i in range(1, len(ids))
            ]
            offsets = [o[0] for o in enc["offset_mapping"]]
            return {
                "choices": [
                    {
                        "text": body["prompt"],
                        "logprobs": {
                            "tokens": tokens,
                            "token_logprobs": token_lps,
                            "top_logprobs": tops,
                            "text_offset": offsets,
                        },
                    }
                ]
            }

        def _complete(self, body):
            req = GenerationRequest(
                body["prompt"],
                tuple(body.get("stop", ())),
                body["max_tokens"],
                body["temperature"],
                body["n"],
                body.get("seed", 0),
            )
            samples = hf.generate([req])[0]
            return {
                "choices": [{"text": s.text, "logprobs": {"token_logprobs": [s.logprob]}} for s in samples]
            }

    return Handler


@pytest.fixture
def server(tiny_model, tiny_tokenizer):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(tiny_model, tiny_tokenizer))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_openai_backend_matches_hf_backend(server, tiny_model, tiny_tokenizer):
    remote = OpenAICompatBackend(server, "tiny", concurrency=2, timeout=30)
    local = HFBackend(tiny_model, tiny_tokenizer)
    reqs = [LoglikelihoodRequest("Question: is the sky blue?\nAnswer:", c) for c in (" yes", " no way")]
    for got, ref in zip(remote.loglikelihood(reqs), local.loglikelihood(reqs)):
        assert got.logprob == pytest.approx(ref.logprob, abs=1e-4)
        assert got.num_tokens == ref.num_tokens and got.is_greedy == ref.is_greedy
    gen = [GenerationRequest("Hello, how are", max_new_tokens=6)]
    assert remote.generate(gen)[0][0].text == local.generate(gen)[0][0].text
    assert remote.fingerprint().startswith("openai:")
