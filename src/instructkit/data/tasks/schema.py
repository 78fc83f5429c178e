"""The task schema: where a task's rows come from, how fields map, which templates render them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from ...errors import InstructkitError
from ..catalog.readers import READERS
from ..templates import Template, check_syntax


class TaskSource(BaseModel):
    """Where rows come from: exactly one of `procedural`, `hub`, `files` or `lm_eval`."""

    model_config = ConfigDict(extra="forbid")

    procedural: str | None = Field(
        None, description="name of a registered generator (instructkit.data.procedural)"
    )
    size: int = Field(1000, ge=1, description="procedural: rows to generate (all splits together)")
    seed: int = Field(0, description="procedural: generator seed")
    params: dict[str, Any] = Field(
        default_factory=dict, description="procedural: generator keyword arguments"
    )
    hub: str | None = Field(None, description="Hugging Face dataset id")
    config: str | None = Field(None, description="hub: dataset config name")
    split: str | None = Field(
        None,
        description="hub: split to read (default train); lm_eval: train, validation, test, fewshot or eval",
    )
    files: list[str] | None = Field(
        None,
        description="local files or globs; relative paths resolve against the data root, then the YAML's directory",
    )
    lm_eval: str | None = Field(
        None, description="an lm-eval task whose documents, rendered by lm-eval, are the rows"
    )
    include: list[str] = Field(
        default_factory=list, description="lm_eval: extra lm-eval task folders (relative to the YAML)"
    )
    explode: str | None = Field(None, description="a list/dict field holding several examples per record")
    reader: str = Field("rows", description=f"record schema: {', '.join(READERS)}")

    @model_validator(mode="after")
    def _one_kind(self) -> TaskSource:
        kinds = [k for k in ("procedural", "hub", "files", "lm_eval") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of procedural, hub, files, lm_eval (got {kinds or 'none'})")
        if self.include and not self.lm_eval:
            raise ValueError("include: only for an lm_eval source (lm-eval task folders)")
        if self.reader not in READERS:
            raise ValueError(f"reader: unknown {self.reader!r} (known: {', '.join(READERS)})")
        return self


class Task(BaseModel):
    """One task: a source of rows and the templates that turn a row into an instruction and a reply."""

    model_config = ConfigDict(extra="forbid")

    name: str
    cluster: str = Field(description="task cluster (held out as a whole in leave-one-cluster-out)")
    collection: str = Field(
        "custom", description="where the task comes from, e.g. procedural, p3_t0, flan_v2"
    )
    description: str = ""
    kind: Literal["template", "chat"] = Field("template", description="chat: rows already are conversations")
    source: TaskSource | None = Field(None, description="one pool of rows, split by split_fractions")
    splits: dict[str, TaskSource] | None = Field(
        None, description="one source per split name (instead of source)"
    )
    split_fractions: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1}
    )
    fields: dict[str, str] = Field(
        default_factory=dict, description="field name → sandboxed expression over the raw record"
    )
    answer_field: str = Field("answer", description="the gold answer (targets, CoT answers, exact match)")
    options: list[str] | None = Field(None, description="fixed answer options (classification)")
    options_field: str | None = Field(None, description="per-row answer options (multiple choice)")
    rationale_field: str | None = Field(None, description="rationale for chain-of-thought formats")
    metric: str = Field("exact_match", description="metric name the evaluator uses")
    exemplar_split: str = Field("train", description="split few-shot exemplars come from")
    eval_split: str = Field("test", description="split evaluation reads")
    eval_only: bool = Field(False, description="benchmark data: a mixture may not train on it unless forced")
    held_out_templates: list[str] = Field(
        default_factory=list, description="template ids kept out of training"
    )
    templates: list[Template] = Field(default_factory=list)
    _base_dir: Path | None = PrivateAttr(None)
    _file: str = PrivateAttr("<inline>")

    @model_validator(mode="after")
    def _check(self) -> Task:
        if (self.source is None) == (self.splits is None):
            raise ValueError("give exactly one of source, splits")
        ids = [t.id for t in self.templates]
        if len(ids) != len(set(ids)):
            raise ValueError(f"templates: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}")
        if self.kind == "template" and not self.templates:
            raise ValueError("templates: a template task needs at least one template")
        unknown = set(self.held_out_templates) - set(ids)
        if unknown:
            raise ValueError(f"held_out_templates: unknown template ids {sorted(unknown)}")
        if self.kind == "template" and not self.train_templates():
            raise ValueError("held_out_templates: every template is held out; none is left for training")
        for template in self.templates:
            check_syntax(self.name, template)
        return self

    def template(self, template_id: str) -> Template:
        """The template with this id (error names the task and the known ids)."""
        for t in self.templates:
            if t.id == template_id:
                return t
        raise InstructkitError(
            f"task {self.name!r}: no template {template_id!r} (known: {', '.join(t.id for t in self.templates)})"
        )

    def train_templates(self) -> list[Template]:
        """Templates a mixture may use: all but the held-out ones."""
        return [t for t in self.templates if t.id not in self.held_out_templates]

    def eval_template_ids(self) -> list[str]:
        """Held-out templates when the task names some, else every non-inverted template."""
        return list(self.held_out_templates) or [t.id for t in self.templates if not t.inverted]

    @property
    def file(self) -> str:
        """The YAML file this task was read from."""
        return self._file

    def split_names(self) -> list[str]:
        """Splits this task offers."""
        return list(self.splits) if self.splits else list(self.split_fractions)
