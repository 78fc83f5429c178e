"""Attention cost of packed rows: dense block-diagonal mask vs per-document attention vs flex.

Run: `python benchmarks/bench_attention.py` (CPU, ~10 minutes idle; BENCH_ATTN_REPEAT=N repeats).
Writes results/attention.md and .json. One attention layer (9 heads × 64, SmolLM2-135M's shape) on
one 2048-token row of 6 documents, on a micro-batch of 4 such packs concatenated (8192 tokens,
24 documents), and on one row of 40 short documents; forward+backward and forward only, median of
repeats:

- `sdpa (dense mask)`: what transformers' sdpa does for packed position_ids (an L×L mask built
  once per forward, then masked sdpa in every layer; the mask build is not timed);
- `sdpa per document`: one causal sdpa call per document (a Python loop);
- `instructkit_docs`: the registered per-document attention (documents bucketed by length);
- `flex_attention` (compiled, document BlockMask): forward only on CPU (no backward there), after
  a one-time compile whose wall time is reported separately.

Then `instructkit train` end to end (tiny:small, packed synthetic chat data, max length 2048):
tokens/s with `--attn-implementation sdpa` (the old path) vs `instructkit_docs` (the new CPU
default), at `--micro-batch-size` 1 and 4 packs, alternating runs (BENCH_ATTN_TRAIN=0 skips it).

The machine may be shared: every ratio compares timings from the same run, interleaved.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import WORK_DIR, machine, synthetic_conversations, write_section  # noqa: E402
from instructkit.train.attention import per_document_attention_forward  # noqa: E402

HEADS, HEAD_DIM = 9, 64
DOCS = [512, 401, 350, 300, 280, 205]  # one 2048-token pack of 6 documents
PACKS = 4
REPEAT = int(os.environ.get("BENCH_ATTN_REPEAT", "7"))
TRAIN = os.environ.get("BENCH_ATTN_TRAIN", "1") == "1"
TRAIN_MODEL, TRAIN_MAX_LENGTH, TRAIN_TOKENS = "tiny:small", 2048, 8 * 2048  # tokens per measured run
TRAIN_ROUNDS = int(os.environ.get("BENCH_ATTN_ROUNDS", "3"))
WORK = WORK_DIR / "attention"


class Layer(torch.nn.Module):
    """Stands in for an attention module: what the attention functions read from it."""

    is_causal = True
    num_key_value_groups = 1


def short_documents() -> list[int]:
    """One 2048-token pack of 40 short documents (20-80 tokens; several share a length bucket)."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 81, (39,), generator=gen).tolist()
    return [*lengths, 2048 - sum(lengths)]


def cases() -> dict[str, list[int]]:
    """Document lengths per case: one pack, a micro-batch of PACKS packs, and many short documents."""
    return {
        f"1 pack, 2048 tokens, {len(DOCS)} docs": DOCS,
        f"{PACKS} packs, {2048 * PACKS} tokens, {len(DOCS) * PACKS} docs": DOCS * PACKS,
        "1 pack, 2048 tokens, 40 short docs": short_documents(),
    }


def qkv(total: int, grad: bool) -> list[torch.Tensor]:
    """Random query, key, value [1, H, T, D]."""
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(1, HEADS, total, HEAD_DIM, generator=gen).requires_grad_(grad) for _ in range(3)]


def dense_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """The boolean block-diagonal causal mask transformers' sdpa path builds for packed rows."""
    doc = (torch.diff(position_ids, prepend=position_ids[:, :1] - 1) != 1).cumsum(-1)[0]
    i = torch.arange(doc.numel())
    return ((doc[:, None] == doc[None, :]) & (i[:, None] >= i[None, :]))[None, None]


def run_dense(mask: torch.Tensor) -> Callable:
    """Masked sdpa over the whole row."""
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def run_loop(lengths: list[int]) -> Callable:
    """One causal sdpa call per document."""

    def attend(q, k, v):
        outs, start = [], 0
        for n in lengths:
            s = slice(start, start + n)
            outs.append(F.scaled_dot_product_attention(q[:, :, s], k[:, :, s], v[:, :, s], is_causal=True))
            start += n
        return torch.cat(outs, dim=2)

    return attend


def run_docs(position_ids: torch.Tensor) -> Callable:
    """The registered per-document attention, called as a model layer calls it."""
    layer = Layer()
    return lambda q, k, v: per_document_attention_forward(layer, q, k, v, None, position_ids=position_ids)[
        0
    ].transpose(1, 2)  # [B, L, H, D] as transformers wants it → [B, H, L, D] like sdpa


def run_flex(lengths: list[int]) -> tuple[Callable, float]:
    """Compiled flex_attention with a document BlockMask; returns it and its first-call (compile) time."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    doc = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))

    def document_causal(b, h, q_idx, kv_idx):
        return (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx)

    total = sum(lengths)
    block = create_block_mask(document_causal, None, None, total, total, device="cpu")
    compiled = torch.compile(flex_attention, dynamic=False)
    q, k, v = qkv(total, grad=False)
    start = time.perf_counter()
    compiled(q, k, v, block_mask=block)
    return (lambda q, k, v: compiled(q, k, v, block_mask=block)), time.perf_counter() - start


def step(attend: Callable, tensors: list[torch.Tensor], backward: bool) -> float:
    """Wall time of one forward (+ backward of the output's sum)."""
    start = time.perf_counter()
    if backward:
        attend(*tensors).sum().backward()
    else:
        with torch.no_grad():
            attend(*tensors)
    return time.perf_counter() - start


def measure(impls: dict[str, Callable], total: int, backward: bool) -> dict[str, float]:
    """Median seconds per implementation, repeats interleaved so machine noise hits all alike."""
    tensors = qkv(total, grad=backward)
    times: dict[str, list[float]] = {name: [] for name in impls}
    for attend in impls.values():  # warm-up
        step(attend, tensors, backward)
    for _ in range(REPEAT):
        for name, attend in impls.items():
            times[name].append(step(attend, tensors, backward))
    return {name: statistics.median(t) for name, t in times.items()}


def check_equal(impls: dict[str, Callable], total: int) -> float:
    """Largest difference of any implementation's output from the dense-mask one (they must agree)."""
    q, k, v = qkv(total, grad=False)
    with torch.no_grad():
        outs = [attend(q, k, v) for attend in impls.values()]
    return max(float((o - outs[0]).abs().max()) for o in outs)


def table(results: dict[str, dict[str, float]]) -> list[str]:
    """Markdown rows: seconds and ratio to the dense mask, per case."""
    lines = ["| case | implementation | median s | vs dense mask |", "|---|---|---:|---:|"]
    for case, times in results.items():
        dense = times["sdpa (dense mask)"]
        for name, t in times.items():
            lines.append(f"| {case} | {name} | {t:.4f} | {dense / t:.2f}× faster |")
    return lines


def prepared_data() -> str:
    """A packed prepared directory of synthetic chat rows (tokenizer trained on them)."""
    import datasets
    import pyarrow as pa

    from instructkit.data.packing import pack_table
    from instructkit.models.tiny import train_tiny_tokenizer

    convs = synthetic_conversations(600, seed=0, median_words=120)
    tokenizer = train_tiny_tokenizer([m["content"] for c in convs for m in c["messages"]], vocab_size=2048)
    ids, labels = [], []
    for c in convs:
        user, reply = (m["content"] for m in c["messages"])
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(p) + len(a) <= TRAIN_MAX_LENGTH:
            ids.append(p + a)
            labels.append([-100] * len(p) + a)
    packed, _ = pack_table(pa.table({"input_ids": ids, "labels": labels}), TRAIN_MAX_LENGTH)
    path = WORK / "data"
    shutil.rmtree(path, ignore_errors=True)
    datasets.Dataset(packed).save_to_disk(str(path))
    (path / "prepare.json").write_text(json.dumps({"max_length": TRAIN_MAX_LENGTH, "packed": True}))
    tokenizer.save_pretrained(str(path / "tokenizer"))
    return str(path)


def train_tokens_per_second(data: str, attn: str, micro: int) -> list[float]:
    """Run `instructkit train`; tokens/s of each logged step but the first (warm-up)."""
    out = WORK / f"{attn}-{micro}"
    steps = max(3, TRAIN_TOKENS // (micro * TRAIN_MAX_LENGTH))
    cli = os.path.join(os.path.dirname(sys.executable), "instructkit")
    cmd = [cli, "train", "--data", data, "--model", TRAIN_MODEL]
    cmd += ["--output-dir", str(out), "--overwrite", "--max-steps", str(steps), "--grad-accum", "1"]
    cmd += ["--micro-batch-size", str(micro), "--attn-implementation", attn, "--logging-steps", "1"]
    cmd += ["--save-steps", "100000", "--no-progress"]
    subprocess.run(cmd, check=True, capture_output=True)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["tokens_per_second"] for r in rows if "tokens_per_second" in r][1:]


def train_section() -> tuple[list[str], dict]:
    """tokens/s of `instructkit train`, old (sdpa) vs new (instructkit_docs), 1 and 4 packs per
    micro-batch; the runs alternate over TRAIN_ROUNDS rounds so that load from other processes
    falls on all of them alike, and each figure is the median over all their steps."""
    data = prepared_data()
    configs = [(attn, micro) for micro in (1, PACKS) for attn in ("sdpa", "instructkit_docs")]
    rates: dict[str, list[float]] = {f"{a}, {m} pack(s)/micro-batch": [] for a, m in configs}
    for _ in range(TRAIN_ROUNDS):
        for (attn, micro), name in zip(configs, rates, strict=True):
            rates[name] += train_tokens_per_second(data, attn, micro)
    results = {name: statistics.median(r) for name, r in rates.items()}
    base = results["sdpa, 1 pack(s)/micro-batch"]
    lines = [
        f"### `instructkit train`, {TRAIN_MODEL}, packed rows of ≤{TRAIN_MAX_LENGTH} tokens, fp32 CPU",
        "",
        f"{TRAIN_ROUNDS} alternating rounds of {TRAIN_TOKENS:,} tokens per run; median (min–max) over steps.",
        "",
        "| attention, micro-batch | tokens/s | range | vs sdpa, 1 pack |",
        "|---|---:|---:|---:|",
        *(
            f"| {k} | {v:,.0f} | {min(rates[k]):,.0f}–{max(rates[k]):,.0f} | {v / base:.2f}× |"
            for k, v in results.items()
        ),
    ]
    return lines, {"median": results, "steps": rates}


def main() -> None:
    """Run every case and write the section."""
    torch.manual_seed(0)
    results, compile_s, max_diff = {}, {}, 0.0
    for label, lengths in cases().items():
        pos = torch.cat([torch.arange(n) for n in lengths])[None]
        total = sum(lengths)
        impls = {
            "sdpa (dense mask)": run_dense(dense_mask(pos)),
            "sdpa per document": run_loop(lengths),
            "instructkit_docs": run_docs(pos),
        }
        max_diff = max(max_diff, check_equal(impls, total))
        results[f"{label}, fwd+bwd"] = measure(impls, total, backward=True)
        flex, compile_s[label] = run_flex(lengths)
        max_diff = max(max_diff, check_equal({**impls, "flex": flex}, total))
        results[f"{label}, fwd only"] = measure({**impls, "flex_attention (compiled)": flex}, total, False)
    lines = [
        "## Attention for packed rows (one layer, 9 heads × 64)",
        "",
        f"Machine: {machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads. "
        f"Median of {REPEAT} interleaved repeats after a warm-up; documents {DOCS} per pack. "
        f"All implementations agree to {max_diff:.1e}. The dense mask is built outside the timing.",
        "",
        *table(results),
        "",
        "flex_attention one-time compile (first call, forward): "
        + ", ".join(f"{k}: {v:.1f} s" for k, v in compile_s.items())
        + ". It has no backward on CPU, so CPU training uses instructkit_docs.",
    ]
    data = {"results": results, "flex_compile_s": compile_s, "max_abs_diff": max_diff, "repeat": REPEAT}
    if TRAIN:
        train_lines, data["train_tokens_per_second"] = train_section()
        lines += ["", *train_lines]
    write_section("attention", "\n".join(lines), data)


if __name__ == "__main__":
    main()
