"""What a pipeline stage reads from outside its run directory, fingerprinted by content.

Each input is a label the dry-run prints (`source data/train.jsonl`, `hub dataset owner/name`)
mapped to a digest: `sha256:<hex>` for a local file or folder (`fingerprint.path_digest`, memoized
by size and mtime, so an unchanged input costs a `stat`), for a `pretrained:` model (its fetched
folder) and for a hub model the local HF cache holds (its snapshot's files): what the stages load.
`hub:<commit>` for a hub dataset the cache resolves, `hub:unpinned` when it does not (its content
cannot be checked offline), and `missing` for a path that does not exist (the stage will say why).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..errors import InstructkitError
from ..fingerprint import path_digest
from ..hub import cached_revision, path_reason

if TYPE_CHECKING:
    from ..data.mixture_config import MixtureConfig
    from ..data.tasks import Task

Inputs = dict[str, str]
UNPINNED = "hub:unpinned"
MISSING = "missing"


def display_path(path: str | Path) -> str:
    """A path as the user most likely wrote it: relative to the working folder when under it."""
    absolute = Path(path).expanduser().absolute()
    try:
        return absolute.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(absolute)


def local_digest(path: str | Path) -> str:
    """`sha256:<hex>` of a file's bytes, or of a folder's file names and contents."""
    return f"sha256:{path_digest(path)}"


def hub_digest(repo_id: str, repo_type: Literal["dataset", "model"]) -> str:
    """`hub:<commit>` when the local HF cache pins the id, else `hub:unpinned`."""
    revision = cached_revision(repo_id, repo_type)
    return f"hub:{revision}" if revision else UNPINNED


def reference_inputs(kind: str, ref: str | None, repo_type: Literal["dataset", "model"]) -> Inputs:
    """A setting naming a local path or a hub id (source, model, tokenizer): its label and digest.

    `tiny:` models and tokenizers are built from code and settings, so they add no input.
    """
    if not ref or ref == "tiny" or ref.startswith("tiny:"):
        return {}
    if ref.startswith("pretrained:"):  # the fetched folder the stages read, by content (fetched if missing)
        from ..models.pretrained import content_digest

        return {f"{kind} {ref}": content_digest(ref)}
    path = Path(ref).expanduser()
    if path.exists():
        return {f"{kind} {display_path(path)}": local_digest(path)}
    name = _hub_name(ref, repo_type)
    if name is not None:
        digest = _hub_model_digest(name) if repo_type == "model" else hub_digest(name, "dataset")
        return {f"hub {kind} {name}": digest}
    return {f"{kind} {ref}": MISSING}


def _hub_model_digest(repo_id: str) -> str:
    """A hub model by the content of the cached snapshot the stages load, else `hub:unpinned`."""
    from ..models.identity import cached_snapshot

    snapshot = cached_snapshot(repo_id)
    return local_digest(snapshot) if snapshot else UNPINNED


def _hub_name(ref: str, repo_type: str) -> str | None:
    """The repo id of a hub reference (`owner/name[:config][@split]` for datasets), or None for a path."""
    dataset = repo_type == "dataset"
    if path_reason(ref, dataset) is not None:  # the one rule telling a path from a hub id
        return None
    return ref.partition("@")[0].partition(":")[0] if dataset else ref


def file_setting_inputs(kind: str, value: str | None) -> Inputs:
    """A setting that may name a file (e.g. a chat template): its digest when it does, else nothing."""
    if not value or "{" in value or "\n" in value:
        return {}
    path = Path(value).expanduser()
    return {f"{kind} {display_path(path)}": local_digest(path)} if path.is_file() else {}


def sources_inputs(sources: Iterable[str]) -> Inputs:
    """Every `prepare` source: local files and folders by content, hub datasets by revision."""
    out: Inputs = {}
    for source in sources:
        out.update(reference_inputs("source", source, "dataset"))
    return out


def task_inputs(tasks: Iterable[Task], root: str | Path | None) -> Inputs:
    """Each task's YAML file and the data it reads (local files by content, hub ids by revision)."""
    from ..data.tasks import data_root, resolve_files

    resolved_root = data_root(root)
    out: Inputs = {}
    for task in tasks:
        if Path(task.file).is_file():
            out[f"task file {display_path(task.file)}"] = local_digest(task.file)
        for source in [task.source] if task.source else list((task.splits or {}).values()):
            if source.hub:
                out[f"hub dataset {source.hub}"] = hub_digest(source.hub, "dataset")
            elif source.files:
                try:
                    files = resolve_files(task, source, resolved_root)
                except InstructkitError:
                    out[f"task {task.name} files {', '.join(source.files)}"] = MISSING
                    continue
                out.update({f"source {display_path(f)}": local_digest(f) for f in files})
    return out


def mixture_inputs(config: MixtureConfig) -> Inputs:
    """The tasks a mixture trains on and decontaminates against: their YAML files and data."""
    from ..data.mixture import resolve_groups
    from ..data.tasks import load_catalog, select_tasks

    catalog = load_catalog(config.catalog)
    tasks = {t.name: t for g in resolve_groups(config, catalog) for t, _ in g.members}
    for ref in config.decontaminate.eval_sets if config.decontaminate else []:
        kind, _, value = ref.rpartition(":")
        picked = select_tasks(
            catalog,
            names=[value] if not kind else [],
            clusters=[value] if kind == "cluster" else [],
            collections=[value] if kind == "collection" else [],
        )
        tasks.update((t.name, t) for t in picked)
    return task_inputs(tasks.values(), config.data_root)


def benchmark_inputs(suite: str | None, benchmarks: list[str], data_dir: str | None) -> Inputs:
    """A suite file and the local benchmark folders (or hub benchmarks, unpinned) it and `benchmarks` read."""
    from ..data.tasks import load_catalog
    from ..evaluate.suites.registry import BENCHMARKS, SUITE_DIR, parse_task_spec, read_suite

    out: Inputs = {}
    entries = [parse_task_spec(b) for b in benchmarks]
    if suite:
        path = Path(suite) if Path(suite).is_file() else SUITE_DIR / f"{suite}.yaml"
        out.update(file_setting_inputs("suite", str(path)))
        entries += read_suite(suite)["tasks"]
    catalog_names = [e["catalog"] for e in entries if "catalog" in e]
    if catalog_names:
        catalog = load_catalog()
        out.update(task_inputs([catalog[n] for n in catalog_names if n in catalog], data_dir))
    for name in sorted(
        {e["benchmark"] for e in entries if "benchmark" in e and e["benchmark"] in BENCHMARKS}
    ):
        folder = Path(data_dir) / BENCHMARKS[name][1] if data_dir else None
        if folder is not None and folder.is_dir():
            out[f"benchmark data {display_path(folder)}"] = local_digest(folder)
        else:
            out[f"hub benchmark {name}"] = UNPINNED
    return out
