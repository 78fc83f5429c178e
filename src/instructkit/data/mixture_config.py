"""A mixture YAML's schema (`MixtureConfig`, every field documented once) and its loader.

Kept apart from `mixture.py` (which renders rows and needs `datasets`) so the CLI can build
`data build`'s options from these fields without importing `datasets`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..settings_io import load_settings
from .decontaminate import DecontaminateSpec
from .prepare_config import OnError
from .prompt_formats import FormatMix

# Flan 2022 sub-mixtures: (weight, per-task example cap), from the Flan Collection release.
FLAN2022_PRESETS: dict[str, tuple[float, int]] = {
    "flan2021": (0.4, 30_000),
    "t0": (0.32, 20_000),
    "niv2": (0.2, 5_000),
    "cot": (0.05, 100_000),
    "dialog": (0.03, 200_000),
}


class RateSpec(BaseModel):
    """How task sampling rates are computed."""

    model_config = ConfigDict(extra="forbid")

    scheme: Literal["examples", "fixed", "temperature"] = "examples"
    cap: int | None = Field(None, ge=1, description="per-task cap on n in the rate (examples, temperature)")
    temperature: float = Field(1.0, gt=0, description="temperature scheme: rate = min(n, cap) ** (1 / T)")


class TaskRef(BaseModel):
    """Tasks by name, cluster or collection, with optional per-task weight (fixed scheme) and cap."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    cluster: str | None = None
    collection: str | None = None
    weight: float = Field(1.0, ge=0)
    cap: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one(self) -> TaskRef:
        if sum(x is not None for x in (self.name, self.cluster, self.collection)) != 1:
            raise ValueError("give exactly one of name, cluster, collection")
        return self


class SubMixture(BaseModel):
    """A group of tasks weighted against the other groups (a Flan 2022 preset fills weight and cap)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    preset: Literal["flan2021", "t0", "niv2", "cot", "dialog"] | None = None
    weight: float | None = Field(None, ge=0)
    rate: RateSpec | None = None
    tasks: list[TaskRef]

    def resolved(self) -> tuple[float, RateSpec]:
        """(weight, rate spec) after applying the preset."""
        weight, cap = FLAN2022_PRESETS[self.preset] if self.preset else (1.0, None)
        rate = self.rate or RateSpec(cap=cap)
        return (self.weight if self.weight is not None else weight), rate


class MixtureConfig(BaseModel):
    """A mixture YAML (every field documented here, once)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "mixture"
    seed: int = Field(
        0, description="seed of every draw: rows, templates, formats, exemplars and their order"
    )
    catalog: list[str] = Field(
        default_factory=list, description="extra task directories (the built-in catalog is always read)"
    )
    data_root: str | None = Field(
        None,
        description="where relative task files live; unset: $INSTRUCTKIT_DATA_ROOT, else a shared/data folder "
        "above the working directory",
    )
    split: str = Field("train", description="task split the mixture draws from")
    tasks: list[TaskRef] = Field(default_factory=list, description="tasks outside any sub-mixture")
    tasks_weight: float = Field(
        1.0, ge=0, description="weight of `tasks` as a group when sub-mixtures are present"
    )
    mixtures: list[SubMixture] = Field(default_factory=list)
    rate: RateSpec = Field(default_factory=RateSpec)
    total: int | None = Field(
        None, ge=0, description="rows in the mixture (default: sum of capped task sizes)"
    )
    allow_repeat: bool = Field(False, description="allow more than one epoch of a task")
    holdout_clusters: list[str] = Field(default_factory=list, description="clusters removed from training")
    formats: FormatMix = Field(default_factory=FormatMix)
    decontaminate: DecontaminateSpec | None = None
    force_eval_only: bool = Field(False, description="train on tasks marked eval_only anyway")
    on_error: OnError = Field("raise", description="bad source rows: raise, or skip to rejects.jsonl")

    @model_validator(mode="after")
    def _has_tasks(self) -> MixtureConfig:
        if not self.tasks and not self.mixtures:
            raise ValueError("a mixture needs `tasks` or `mixtures`")
        return self


def load_mixture_config(path: str | Path, **given: Any) -> MixtureConfig:
    """Read and validate a mixture YAML, `given` fields (e.g. `data build --seed`) over the file's.

    Catalog paths are resolved against the YAML's directory.
    """
    path = Path(path)
    config = load_settings(MixtureConfig, path, given=given, what="mixture file")
    config.catalog = [
        str((path.parent / c).resolve()) if not Path(c).is_absolute() else c for c in config.catalog
    ]
    return config
