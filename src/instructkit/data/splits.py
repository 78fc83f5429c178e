"""Leave-one-cluster-out splits (FLAN): for each cluster c, a training mixture without c and c's evaluation set.

`leave_one_cluster_out(config, out_dir)` writes `out_dir/<cluster>/train` (a built mixture) and
`out_dir/<cluster>/eval` (every task of the cluster, its eval split, zero-shot, rendered with its
evaluation templates; `meta` carries the gold `answer`, `options` and `metric`), plus `splits.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from .conversation import CONVERSATION_FEATURES, Conversation, Message
from .mixture import build_mixture, check_sources, decontamination_sets, resolve_groups
from .mixture_config import MixtureConfig
from .tasks import Task, eval_examples, load_catalog


def mixture_clusters(config: MixtureConfig, catalog: dict[str, Task]) -> dict[str, list[Task]]:
    """Clusters of the mixture's tasks (held-out clusters included), each with its tasks."""
    everything = config.model_copy(update={"holdout_clusters": [], "force_eval_only": True})
    clusters: dict[str, list[Task]] = {}
    for group in resolve_groups(everything, catalog):
        for task, _ in group.members:
            clusters.setdefault(task.cluster, []).append(task)
    return clusters


def eval_conversations(
    tasks: list[Task], *, seed: int = 0, limit: int | None = None, root: str | None = None
) -> list[Conversation]:
    """Zero-shot evaluation conversations of the tasks' eval splits (chat tasks are skipped: no gold answers)."""
    out = []
    for task in tasks:
        if task.kind != "template":
            continue
        for ex in eval_examples(task, seed=seed, limit=limit, root=root):
            meta = {"answer": ex.answer, "options": ex.options, "metric": ex.metric, **ex.meta}
            out.append(
                Conversation(
                    [Message("user", ex.prompt), Message("assistant", ex.target)],
                    source=ex.meta["source"],
                    row_id=ex.row_id,
                    task=ex.task,
                    cluster=ex.cluster,
                    template_id=ex.template_id,
                    format=ex.format,
                    meta=meta,
                )
            )
    return out


def write_eval_set(conversations: list[Conversation], out_dir: Path) -> None:
    """Save conversations as a `datasets` directory with CONVERSATION_FEATURES."""
    import datasets

    records = [c.to_record() for c in conversations]
    columns = {k: [r[k] for r in records] for k in CONVERSATION_FEATURES}
    datasets.Dataset.from_dict(columns, features=CONVERSATION_FEATURES).save_to_disk(
        str(out_dir), num_shards=1
    )


def _without(config: MixtureConfig, cluster: str) -> MixtureConfig:
    """The training mixture of one split: the config with `cluster` held out too."""
    return config.model_copy(
        update={
            "holdout_clusters": [*config.holdout_clusters, cluster],
            "name": f"{config.name}-without-{cluster}",
        }
    )


def split_problems(
    config: MixtureConfig, catalog: dict[str, Task], held_out: list[Task], cluster: str
) -> list[str]:
    """Why the split holding out `cluster` could not be made (empty: it can), without reading rows.

    Its evaluation needs a template task and each such task's eval split and files; its training
    mixture needs each task's training split and files, no eval-only task, and the splits its
    decontamination reads.
    """
    evaluable = [t for t in held_out if t.kind == "template"]
    found = [] if evaluable else ["no template task to evaluate (chat tasks only)"]
    for task in evaluable:  # the held-out evaluation reads each task's eval split
        found += check_sources([task], task.eval_split, config.data_root)
    try:
        groups = resolve_groups(_without(config, cluster), catalog)
    except InstructkitError as exc:
        return [*found, str(exc)]
    train = [t for g in groups for t, _ in g.members]
    found += check_sources(train, config.split, config.data_root)
    for task, split in decontamination_sets(config, catalog):  # the rows training leaves out
        found += check_sources([task], split, config.data_root)
    return found


def check_splits(
    config: MixtureConfig, catalog: dict[str, Task], by_cluster: dict[str, list[Task]], chosen: list[str]
) -> None:
    """Refuse before any split is written when any of them could not be made, naming every problem."""
    problems = {c: found for c in chosen if (found := split_problems(config, catalog, by_cluster[c], c))}
    if not problems:
        return
    where: dict[str, list[str]] = {}  # each problem once, with the held-out clusters it stops
    for cluster, found in problems.items():
        for problem in found:
            where.setdefault(problem, []).append(cluster)
    lines = [f"{p} [holding out {', '.join(dict.fromkeys(cs))}]" for p, cs in where.items()]
    fine = [c for c in chosen if c not in problems]
    hint = "nothing was written"
    if fine:
        hint += "; to split only the clusters that can be, pass " + " ".join(f"--cluster {c}" for c in fine)
    raise InstructkitError(
        f"mixture {config.name!r}: {len(problems)} of {len(chosen)} splits cannot be made:\n  "
        + "\n  ".join(lines)
        + f"\n{hint}"
    )


def leave_one_cluster_out(
    config: MixtureConfig,
    out_dir: str | Path,
    *,
    clusters: list[str] | None = None,
    num_proc: int = 1,
    eval_limit: int | None = None,
) -> dict[str, Any]:
    """Write every FLAN-style split (train without cluster c, eval set of c); returns the summary."""
    out = Path(out_dir)
    catalog = load_catalog(config.catalog)
    by_cluster = mixture_clusters(config, catalog)
    chosen = clusters or sorted(c for c in by_cluster if c not in config.holdout_clusters)
    unknown = [c for c in chosen if c not in by_cluster]
    if unknown:
        raise InstructkitError(
            f"clusters {unknown} are not in mixture {config.name!r} (it has: {', '.join(sorted(by_cluster))})"
        )
    check_splits(config, catalog, by_cluster, chosen)
    summary: dict[str, Any] = {"mixture": config.name, "seed": config.seed, "splits": {}}
    for cluster in chosen:
        stats = build_mixture(
            _without(config, cluster), out / cluster / "train", num_proc=num_proc, catalog=catalog
        )
        conversations = eval_conversations(
            by_cluster[cluster], seed=config.seed, limit=eval_limit, root=config.data_root
        )
        write_eval_set(conversations, out / cluster / "eval")
        summary["splits"][cluster] = {
            "train_rows": stats["rows"],
            "train_tasks": sorted(stats["tasks"]),
            "eval_rows": len(conversations),
            "eval_tasks": [t.name for t in by_cluster[cluster]],
        }
    (out / "splits.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return summary
