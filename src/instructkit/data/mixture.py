"""Mixtures: which tasks, at what rates, in which formats, with held-out clusters and decontamination.

`build_mixture(config, out_dir, num_proc=1) -> stats` writes a `datasets` directory of conversations
(`CONVERSATION_FEATURES`) plus `stats.json` (and `rejects.jsonl` / `decontamination.jsonl` when rows
were dropped). The result is a pure function of (config, seed): every row's template, format and
exemplars come from an RNG keyed by (seed, task, split, row, occurrence), so `num_proc` cannot change it.

Rates: `examples` (rate = min(n, cap)), `fixed` (rate = weight) or `temperature` (rate = min(n, cap)^(1/T)).
With sub-mixtures, each group's rates are normalised to the group's weight. The default total is the
sum of the capped task sizes; no task gives more than one epoch unless `allow_repeat` is set.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..errors import InstructkitError
from .conversation import CONVERSATION_FEATURES
from .decontaminate import EvalIndex
from .mixture_config import MixtureConfig, RateSpec, TaskRef
from .prepared import MAP_BATCH, map_workers, same_environ
from .procedural.rng import stable_rng
from .rejects import RejectLog
from .tasks import (
    Task,
    data_root,
    load_catalog,
    render_training_example,
    resolve_files,
    select_tasks,
    task_rows,
)

# ---------------------------------------------------------------- resolving tasks


@dataclass
class Group:
    """A resolved sub-mixture: weight, rate spec and its tasks with their refs."""

    name: str
    weight: float
    rate: RateSpec
    members: list[tuple[Task, TaskRef]] = field(default_factory=list)


def _expand(catalog: dict[str, Task], ref: TaskRef) -> list[Task]:
    tasks = select_tasks(
        catalog,
        names=[ref.name] if ref.name else [],
        clusters=[ref.cluster] if ref.cluster else [],
        collections=[ref.collection] if ref.collection else [],
    )
    if not tasks:
        raise InstructkitError(
            f"mixture entry {ref.model_dump(exclude_defaults=True)} matches no catalog task"
        )
    return tasks


def resolve_groups(config: MixtureConfig, catalog: dict[str, Task]) -> list[Group]:
    """Expand task refs into groups, drop held-out clusters, and refuse eval-only tasks unless forced."""
    specs = [(config.name, config.tasks_weight, config.rate, config.tasks)] if config.tasks else []
    specs += [(m.name, *m.resolved(), m.tasks) for m in config.mixtures]
    groups, seen = [], {}
    for name, weight, rate, refs in specs:
        group = Group(name, weight, rate)
        for ref in refs:
            for task in _expand(catalog, ref):
                if task.cluster in config.holdout_clusters:
                    continue
                if task.name in seen:
                    raise InstructkitError(
                        f"task {task.name!r} is listed twice (groups {seen[task.name]!r} and {name!r})"
                    )
                seen[task.name] = name
                group.members.append((task, ref))
        groups.append(group)
    _refuse_eval_only(config, [t for g in groups for t, _ in g.members])
    return [g for g in groups if g.members]


def _refuse_eval_only(config: MixtureConfig, tasks: list[Task]) -> None:
    banned = [t.name for t in tasks if t.eval_only]
    if banned and not config.force_eval_only:
        raise InstructkitError(
            f"mixture {config.name!r} would train on evaluation-only tasks {banned} (benchmark data); "
            "remove them, hold out their cluster, or set force_eval_only: true"
        )


def split_problem(task: Task, split: str, root: str | None) -> str | None:
    """Why `task` cannot give rows of `split` (no such split, or its files are missing), else None.

    Cheap (no rows are read), so a long command can check every task it will touch before any work.
    """
    if split not in task.split_names():
        return (
            f"task {task.name!r} ({task.file}): no split {split!r} (splits: {', '.join(task.split_names())})"
        )
    source = task.splits[split] if task.splits else task.source
    if source is None or not source.files:
        return None
    try:
        resolve_files(task, source, data_root(root))
    except InstructkitError as exc:
        return str(exc)
    return None


def check_sources(tasks: list[Task], split: str, root: str | None) -> list[str]:
    """Every problem `split_problem` finds among `tasks` (an empty list: all can be read)."""
    return [p for t in tasks if (p := split_problem(t, split, root)) is not None]


# ---------------------------------------------------------------- rates and counts


def task_rate(n: int, ref: TaskRef, rate: RateSpec) -> float:
    """The unnormalised sampling rate of one task of size n."""
    cap = ref.cap or rate.cap
    capped = min(n, cap) if cap else n
    if rate.scheme == "fixed":
        return ref.weight if n > 0 else 0.0
    if rate.scheme == "temperature":
        return capped ** (1.0 / rate.temperature)
    return float(capped)


def group_rates(groups: list[Group], sizes: dict[str, int]) -> dict[str, float]:
    """Rates of all tasks; with several groups each group's rates sum to its weight."""
    rates: dict[str, float] = {}
    for group in groups:
        raw = {t.name: task_rate(sizes[t.name], ref, group.rate) for t, ref in group.members}
        total = sum(raw.values())
        scale = group.weight / total if len(groups) > 1 and total > 0 else 1.0
        rates.update({name: r * scale for name, r in raw.items()})
    return rates


def default_total(groups: list[Group], sizes: dict[str, int]) -> int:
    """Sum over tasks of min(n, cap): the mixture size when `total` is not set."""
    total = 0
    for group in groups:
        for task, ref in group.members:
            cap = ref.cap or group.rate.cap
            total += min(sizes[task.name], cap) if cap else sizes[task.name]
    return total


def allocate(
    sizes: dict[str, int], rates: dict[str, float], total: int, allow_repeat: bool = False
) -> dict[str, int]:
    """Integer rows per task, proportional to rates and summing to `total` (or to all rows, if fewer).

    Without `allow_repeat` a task whose share exceeds its size gets exactly its size and the rest is
    re-shared among the others (water-filling); remainders go by largest fraction, ties by name.
    """
    counts = {name: 0 for name in sizes}
    active = sorted(n for n in sizes if rates.get(n, 0) > 0 and sizes[n] > 0)
    remaining = total if allow_repeat else min(total, sum(sizes[n] for n in active))
    shares: dict[str, Fraction] = {}
    while active:
        rate_sum = sum(Fraction(rates[n]) for n in active)
        shares = {n: remaining * Fraction(rates[n]) / rate_sum for n in active}
        full = [n for n in active if not allow_repeat and shares[n] >= sizes[n]]
        if not full:
            break
        for n in full:
            counts[n] = sizes[n]
            remaining -= sizes[n]
        active = [n for n in active if n not in full]
    floors = {n: math.floor(shares[n]) for n in active}
    leftover = remaining - sum(floors.values())
    by_fraction = sorted(active, key=lambda n: (-(shares[n] - floors[n]), n))
    for i, n in enumerate(active and by_fraction):
        counts[n] = floors[n] + (1 if i < leftover else 0)
    return counts


def select_rows(seed: int, task: str, pool: list[int], count: int) -> list[tuple[int, int]]:
    """(row index, occurrence) pairs: whole shuffled epochs of `pool`, then a shuffled partial one."""
    picked: list[tuple[int, int]] = []
    epoch = 0
    while len(picked) < count and pool:
        order = stable_rng(seed, "select", task, epoch).permutation(len(pool))
        picked += [(pool[int(i)], epoch) for i in order[: count - len(picked)]]
        epoch += 1
    return picked


# ---------------------------------------------------------------- building


class _Renderer:
    """The `datasets.map` function: renders plan rows; loads task rows lazily in each worker."""

    def __init__(self, tasks: dict[str, Task], config: MixtureConfig):
        self.tasks, self.config = tasks, config

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in CONVERSATION_FEATURES}
        cfg = self.config
        loaded: dict[str, tuple[list, list]] = {}  # a task's rows looked up once per batch, not per row
        for name, index, occurrence in zip(batch["_task"], batch["_row"], batch["_occurrence"], strict=True):
            task = self.tasks[name]
            if name not in loaded:
                loaded[name] = self._rows_and_exemplars(task)
            rows, pool = loaded[name]
            conv = render_training_example(
                task, rows, pool, index, cfg.split, cfg.formats, cfg.seed, occurrence
            )
            for key, value in conv.to_record().items():
                out[key].append(value)
        return out

    def _rows_and_exemplars(self, task: Task) -> tuple[list, list]:
        cfg = self.config
        rows = task_rows(task, cfg.split, root=cfg.data_root, rejects=RejectLog(cfg.on_error))
        if task.kind != "template":
            return rows, []
        return rows, task_rows(task, task.exemplar_split, root=cfg.data_root, rejects=RejectLog(cfg.on_error))


def config_hash(config: MixtureConfig) -> str:
    """A short hash of the validated config (recorded in stats, used as the dataset fingerprint)."""
    return hashlib.blake2b(config.model_dump_json().encode(), digest_size=8).hexdigest()


def decontamination_sets(config: MixtureConfig, catalog: dict[str, Task]) -> list[tuple[Task, str]]:
    """The (task, split) pairs whose rows decontamination removes from the mixture (none without it)."""
    spec = config.decontaminate
    if spec is None:
        return []
    found = []
    for ref in spec.eval_sets:
        kind, _, value = ref.rpartition(":")
        for task in select_tasks(
            catalog,
            names=[value] if not kind else [],
            clusters=[value] if kind == "cluster" else [],
            collections=[value] if kind == "collection" else [],
        ):
            found.append((task, spec.split or task.eval_split))
    return found


def _decontaminate(
    config: MixtureConfig, catalog: dict[str, Task], rows: dict[str, list[dict]]
) -> tuple[dict[str, set[int]], list[dict]]:
    spec = config.decontaminate
    if spec is None:
        return {}, []
    index = EvalIndex(spec.n)
    for task, split in decontamination_sets(config, catalog):
        index.add(task.name, task_rows(task, split, root=config.data_root))
    removed, report = {}, []
    for name, task_data in rows.items():
        hits = index.find(task_data)
        removed[name] = {h.index for h in hits}
        report += [
            {
                "task": name,
                "row": h.index,
                "source": task_data[h.index]["_source"],
                "eval_set": h.eval_set,
                "eval_source": h.eval_source,
                "ngram": h.ngram,
            }
            for h in hits
        ]
    return removed, report


@dataclass
class MixturePlan:
    """What will be rendered: (task, row, occurrence) triples in output order, plus the numbers behind them."""

    plan: list[tuple[str, int, int]]
    sizes: dict[str, int]
    rates: dict[str, float]
    counts: dict[str, int]
    tasks: dict[str, Task]
    removed: dict[str, set[int]]
    report: list[dict]
    rejects: RejectLog


def plan_mixture(config: MixtureConfig, catalog: dict[str, Task] | None = None) -> MixturePlan:
    """Resolve tasks, load rows, decontaminate, allocate counts and order the rows (no rendering)."""
    catalog = catalog if catalog is not None else load_catalog(config.catalog)
    groups = resolve_groups(config, catalog)
    tasks = {t.name: t for g in groups for t, _ in g.members}
    problems = check_sources(list(tasks.values()), config.split, config.data_root)
    problems += [
        p
        for t, split in decontamination_sets(config, catalog)
        for p in check_sources([t], split, config.data_root)
    ]
    if problems:
        raise InstructkitError(f"mixture {config.name!r} cannot be built:\n  " + "\n  ".join(problems))
    rejects = RejectLog(config.on_error)
    rows = {n: task_rows(t, config.split, root=config.data_root, rejects=rejects) for n, t in tasks.items()}
    removed, report = _decontaminate(config, catalog, rows)
    pools = {n: [i for i in range(len(r)) if i not in removed.get(n, set())] for n, r in rows.items()}
    sizes = {n: len(p) for n, p in pools.items()}
    rates = group_rates(groups, sizes)
    total = config.total if config.total is not None else default_total(groups, sizes)
    counts = allocate(sizes, rates, total, config.allow_repeat)
    plan = [(n, i, occ) for n in tasks for i, occ in select_rows(config.seed, n, pools[n], counts[n])]
    order = stable_rng(config.seed, "order").permutation(len(plan))
    return MixturePlan([plan[int(i)] for i in order], sizes, rates, counts, tasks, removed, report, rejects)


def build_mixture(
    config: MixtureConfig, out_dir: str | Path, num_proc: int = 1, catalog: dict[str, Task] | None = None
) -> dict[str, Any]:
    """Render the mixture to `out_dir` (a `datasets` directory + stats.json); returns the stats."""
    import datasets

    out = Path(out_dir)
    plan = plan_mixture(config, catalog)
    columns = {
        "_task": [p[0] for p in plan.plan],
        "_row": [p[1] for p in plan.plan],
        "_occurrence": [p[2] for p in plan.plan],
    }
    ds = datasets.Dataset.from_dict(
        columns,
        features=datasets.Features(
            {
                "_task": datasets.Value("string"),
                "_row": datasets.Value("int64"),
                "_occurrence": datasets.Value("int64"),
            }
        ),
    )
    with same_environ():
        ds = ds.map(
            _Renderer(plan.tasks, config),
            batched=True,
            batch_size=MAP_BATCH,
            num_proc=map_workers(len(ds), num_proc),
            remove_columns=list(columns),
            features=CONVERSATION_FEATURES,
            new_fingerprint=config_hash(config),
            desc=f"rendering mixture {config.name}",
        )
    return write_mixture(config, plan, ds, out)


def write_mixture(config: MixtureConfig, plan: MixturePlan, ds: Any, out: Path) -> dict[str, Any]:
    """Save the rendered rows, rejects, decontamination report and stats (whichever executor rendered them)."""
    out.mkdir(parents=True, exist_ok=True)
    ds.save_to_disk(str(out), num_shards=1)
    stats = compute_stats(config, plan, ds)
    plan.rejects.write(out / "rejects.jsonl")
    _write_jsonl(out / "decontamination.jsonl", plan.report)
    (out / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return stats


def _write_jsonl(path: Path, records: list[dict]) -> None:
    if records:
        path.write_text(
            "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records),
            encoding="utf-8",
        )
    elif path.exists():
        path.unlink()


def compute_stats(config: MixtureConfig, plan: MixturePlan, ds: Any) -> dict[str, Any]:
    """Rows per task and cluster, rates, template and format usage, rows removed or rejected."""
    total = len(ds)
    tasks = {
        name: {
            "cluster": task.cluster,
            "available": plan.sizes[name],
            "rate": plan.rates.get(name, 0.0),
            "effective_rate": plan.counts[name] / total if total else 0.0,
            "rows": plan.counts[name],
            "epochs": plan.counts[name] / plan.sizes[name] if plan.sizes[name] else 0.0,
            "removed_by_decontamination": len(plan.removed.get(name, ())),
        }
        for name, task in plan.tasks.items()
    }
    task_col, template_col = list(ds["task"]), list(ds["template_id"])
    return {
        "name": config.name,
        "seed": config.seed,
        "split": config.split,
        "config_hash": config_hash(config),
        "rows": total,
        "tasks": tasks,
        "clusters": dict(
            sorted(Counter(t["cluster"] for t in tasks.values() for _ in range(t["rows"])).items())
        ),
        "formats": dict(sorted(Counter(ds["format"]).items())),
        "templates": dict(
            sorted(Counter(f"{t}/{tid}" for t, tid in zip(task_col, template_col, strict=True)).items())
        ),
        "holdout_clusters": list(config.holdout_clusters),
        "removed_by_decontamination": len(plan.report),
        "rejected": len(plan.rejects),
    }
