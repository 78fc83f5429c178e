"""Evaluation and `instructkit run` directories laid out as the runner and the pipeline write them
(results.json aggregated by the runner's own functions, samples/<task>.jsonl, stage stats), from
given per-row scores, so report tests run in milliseconds without a model."""

from __future__ import annotations

import json
from pathlib import Path

from instructkit.evaluate.metrics import bootstrap_ci, macro_average, mean, normalized_score
from instructkit.evaluate.runner import RESULTS_FILE, group_summary

Rows = dict[str, tuple[str, float, list[float]]]  # task → (cluster, random baseline, per-row acc 0/1)


def write_eval_run(path: Path, tasks: Rows, ids: str = "r") -> Path:
    """results.json + samples/ for per-row accuracies; row ids are f'{ids}{i}'."""
    summaries = {}
    for name, (cluster, random, rows) in tasks.items():
        score = 100 * mean(rows)
        summaries[name] = {
            "metric": "acc",
            "score": score,
            "ci95": list(bootstrap_ci([100 * x for x in rows])),
            "metrics": {"acc": score},
            "n": len(rows),
            "random_baseline": random,
            "normalized": normalized_score(score, random),
            "group": name,
            "cluster": cluster,
        }
        samples = path / "samples" / (name.replace("/", "__") + ".jsonl")
        samples.parent.mkdir(parents=True, exist_ok=True)
        samples.write_text(
            "".join(json.dumps({"id": f"{ids}{i}", "acc": x}) + "\n" for i, x in enumerate(rows))
        )
    groups = group_summary(summaries)
    results = {
        "model": path.name,
        "tasks": summaries,
        "groups": groups,
        "clusters": group_summary(summaries, key="cluster"),
        "normalized_average": macro_average([g["normalized"] for g in groups.values()]),
    }
    (path / RESULTS_FILE).write_text(json.dumps(results))
    return path


def flips(n: int, ones: int) -> list[float]:
    """n rows of which the first `ones` are correct."""
    return [1.0] * ones + [0.0] * (n - ones)


# A quickstart-shaped comparison: a large gain on held-out rows (12 rows × 4 tasks) and, on the
# held-out cluster (24 rows × 3 two-way tasks), one or two rows more per task right after tuning.
BASE: Rows = {
    **{f"heldout_rows/task{t}": ("heldout_rows/0-shot", 25.0, flips(12, 3)) for t in range(4)},
    **{f"heldout_cluster/cmp{t}": ("heldout_cluster/0-shot", 50.0, flips(24, 10)) for t in range(3)},
}
TUNED: Rows = {
    **{f"heldout_rows/task{t}": ("heldout_rows/0-shot", 25.0, flips(12, 10)) for t in range(4)},
    **{
        f"heldout_cluster/cmp{t}": ("heldout_cluster/0-shot", 50.0, flips(24, 10 + 1 + t % 2))
        for t in range(3)
    },
}


def write_pipeline_run(root: Path, base: Rows = BASE, tuned: Rows = TUNED) -> dict[str, Path]:
    """A run directory with mixture/prepare stats, a training log and both evaluations; the inputs
    dict the report stage receives."""
    for stage, stats in {
        "mixture": {
            "rows": 7769,
            "tasks": {"add": {"cluster": "arithmetic"}},
            "holdout_clusters": ["comparison"],
            "rejected": 0,
            "removed_by_decontamination": 0,
        },
        "prepare": {
            "examples_in": 7769,
            "rejected": 2,
            "dropped_overlong": 1,
            "dropped_no_trainable": 0,
            "truncated": 0,
            "examples_out": 7766,
            "tokens": 311000,
            "trainable_tokens": 90000,
            "packs": 608,
            "packing_efficiency": 0.9912,
        },
    }.items():
        (root / stage).mkdir(parents=True)
        (root / stage / "stats.json").write_text(json.dumps(stats))
    (root / "prepare" / "rejects.jsonl").write_text('{"file": "x", "row": 3, "reason": "bad"}\n')
    (root / "train").mkdir()
    log = [{"step": s, "loss": 5.0 / (1 + s / 20)} for s in range(5, 200, 5)]
    (root / "train" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    inputs = {"train": root / "train", "prepare": root / "prepare"}
    for which, rows in (("base", base), ("tuned", tuned)):
        inputs[f"eval-{which}"] = write_eval_run(root / f"eval-{which}", rows)
    (root / "report").mkdir()
    return inputs
