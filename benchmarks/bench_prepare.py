"""Data preparation and packing, instructkit vs TRL, same tokenizer and data, one run.

Run: `python benchmarks/bench_prepare.py` (needs the `bench` extra for TRL). Writes results/prepare.md.
20,000 synthetic single-turn conversations with heavy-tailed lengths (median ≈ 250 tokens, some
longer than the limit) are prepared both ways: template + tokenize + assistant-only mask + pack.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import datasets
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import WORK_DIR, machine, synthetic_conversations, timed, write_section  # noqa: E402
from instructkit.data.packing import pack_table  # noqa: E402
from instructkit.data.prepare import PrepareConfig, prepare  # noqa: E402
from instructkit.models.tiny import train_tiny_tokenizer  # noqa: E402

N = int(os.environ.get("BENCH_PREPARE_N", "20000"))


def build_inputs() -> tuple[str, str, list[dict]]:
    rows = synthetic_conversations(N)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    data = WORK_DIR / "conversations.jsonl"
    with open(data, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    texts = (m["content"] for r in rows[:5000] for m in r["messages"])
    tokenizer = train_tiny_tokenizer(texts, vocab_size=8192)
    tok_dir = WORK_DIR / "tokenizer"
    tokenizer.save_pretrained(tok_dir)
    return str(data), str(tok_dir), rows


def ours_prepare(data: str, tok_dir: str, max_length: int) -> dict:
    out = WORK_DIR / f"ours_{max_length}"
    cfg = PrepareConfig(sources=[data], tokenizer=tok_dir, out=str(out), max_length=max_length, pack=True)
    return prepare(cfg, progress=False)


def trl_prepare(rows: list[dict], tok_dir: str, max_length: int) -> tuple[datasets.Dataset, float]:
    """TRL's own SFT dataset preparation (conversational prompt-completion, completion-only loss, bfd packing)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    pc = [{"prompt": r["messages"][:1], "completion": r["messages"][1:]} for r in rows]
    ds = datasets.Dataset.from_list(pc)
    args = SFTConfig(
        output_dir=str(WORK_DIR / "trl"),
        max_length=max_length,
        packing=True,
        packing_strategy="bfd",
        report_to=[],
        dataset_num_proc=None,
        use_cpu=True,
    )
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=ds.select(range(8)), processing_class=tokenizer
    )
    return timed(lambda: trainer._prepare_dataset(ds, tokenizer, args, True, None, "bench"))


def trl_trainable(packed: datasets.Dataset) -> int:
    column = packed.data.column("labels").combine_chunks().flatten().to_numpy()
    return int((column != -100).sum())


def packing_only(tok_dir_out: str, max_length: int) -> dict:
    """Pack the same tokenized (≤ L) sequences both ways; compare rows, efficiency and time."""
    from trl import pack_dataset

    table = datasets.load_from_disk(tok_dir_out).data.table
    unpacked = _unpack(table)
    ours, ours_s = timed(lambda: pack_table(unpacked, max_length), repeat=3)
    ds = datasets.Dataset(unpacked)
    theirs, theirs_s = timed(lambda: pack_dataset(ds, max_length, strategy="bfd"), repeat=3)
    tokens = int(np.diff(unpacked.column("input_ids").combine_chunks().offsets.to_numpy()).sum())
    lower = -(-tokens // max_length)
    return {
        "max_length": max_length,
        "tokens": tokens,
        "lower_bound": lower,
        "ours_rows": ours[1].packs,
        "trl_rows": len(theirs),
        "ours_eff": tokens / (ours[1].packs * max_length),
        "trl_eff": tokens / (len(theirs) * max_length),
        "ours_s": ours_s,
        "trl_s": theirs_s,
    }


def _unpack(packed_table):
    """Recover the unpacked examples from a packed table (split each row by seq_lens)."""
    import pyarrow as pa

    ids = packed_table.column("input_ids").combine_chunks()
    labels = packed_table.column("labels").combine_chunks()
    lens = packed_table.column("seq_lens").combine_chunks().flatten().to_numpy()
    offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int32)
    return pa.table(
        {
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), ids.flatten()),
            "labels": pa.ListArray.from_arrays(pa.array(offsets), labels.flatten()),
        }
    )


def main() -> None:
    datasets.disable_progress_bars()
    data, tok_dir, rows = build_inputs()
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tok_dir)  # import cost paid before timing, for both sides
    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        trl_version = None
    results = {"n": N, "machine": machine(), "trl": trl_version, "whole": [], "packing": []}
    for max_length in (2048, 4096):
        stats, ours_s = timed(lambda L=max_length: ours_prepare(data, tok_dir, L))
        entry = {
            "max_length": max_length,
            "ours_s": ours_s,
            "ours_trainable": stats["trainable_tokens_packed"],
            "ours_rows": stats["packs"],
            "median_tokens": None,
        }
        if trl_version:
            packed, trl_s = trl_prepare(rows, tok_dir, max_length)
            entry.update(trl_s=trl_s, trl_trainable=trl_trainable(packed), trl_rows=len(packed))
            results["packing"].append(packing_only(str(WORK_DIR / f"ours_{max_length}"), max_length))
        results["whole"].append(entry)
    lengths = np.asarray(datasets.load_from_disk(str(WORK_DIR / "ours_4096"))["seq_lens"], dtype=object)
    flat = np.concatenate([np.asarray(x) for x in lengths])
    results["median_tokens"] = float(np.median(flat))
    write_section("prepare", render(results), results)
    shutil.rmtree(WORK_DIR, ignore_errors=True)


def render(r: dict) -> str:
    lines = [
        "## Data preparation and packing (issue #2)",
        "",
        f"`python benchmarks/bench_prepare.py` — {r['n']:,} synthetic conversations, median {r['median_tokens']:.0f} "
        f"tokens, heavy tail past the limit; same tokenizer (byte-level BPE, 8k vocab), single process; "
        f"{r['machine']}; TRL {r['trl'] or 'not installed'}.",
        "",
        "Whole preparation (template + tokenize + assistant-only mask + pack); ours reads JSONL from disk and writes "
        "the result, TRL's `SFTTrainer._prepare_dataset` starts from an in-memory dataset:",
        "",
        "| max length | instructkit ex/s | TRL ex/s | speed-up | trainable tokens (ours / TRL) | rows (ours / TRL) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for w in r["whole"]:
        if "trl_s" in w:
            lines.append(
                f"| {w['max_length']} | {r['n'] / w['ours_s']:,.0f} | {r['n'] / w['trl_s']:,.0f} | "
                f"{w['trl_s'] / w['ours_s']:.2f}× | {w['ours_trainable']:,} / {w['trl_trainable']:,} | "
                f"{w['ours_rows']:,} / {w['trl_rows']:,} |"
            )
        else:
            lines.append(
                f"| {w['max_length']} | {r['n'] / w['ours_s']:,.0f} | – | – | {w['ours_trainable']:,} / – | – |"
            )
    if r["packing"]:
        lines += [
            "",
            "Packing only (same tokenized sequences, all ≤ L; best of 3):",
            "",
            "| max length | lower bound ⌈tokens/L⌉ | rows ours | rows TRL | efficiency ours | efficiency TRL | ours vs bound | time ours | time TRL | speed-up |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in r["packing"]:
            lines.append(
                f"| {p['max_length']} | {p['lower_bound']:,} | {p['ours_rows']:,} | {p['trl_rows']:,} | "
                f"{p['ours_eff']:.4%} | {p['trl_eff']:.4%} | +{(p['ours_rows'] / p['lower_bound'] - 1):.3%} | "
                f"{p['ours_s'] * 1000:.0f} ms | {p['trl_s'] * 1000:.0f} ms | {p['trl_s'] / p['ours_s']:.1f}× |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
