"""Entailment generators: does a hypothesis follow from generated facts (yes / no / it is not possible to tell)?"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import pick, register, sample
from .words import COLORS, ITEMS, NAMES, OBJECTS, PLACES

NLI_OPTIONS = ["yes", "no", "it is not possible to tell"]


def _label(rng: np.random.Generator) -> str:
    return pick(rng, NLI_OPTIONS)


@register("entail_location")
def location(rng: np.random.Generator) -> dict[str, Any]:
    """Two people in two places; the hypothesis places someone (maybe someone unmentioned)."""
    a, b, c = sample(rng, NAMES, 3)
    pa, pb, other = sample(rng, PLACES, 3)
    label = _label(rng)
    who, where = {"yes": (a, pa), "no": (a, other), "it is not possible to tell": (c, pa)}[label]
    premise = f"{a} is in the {pa}. {b} is in the {pb}."
    return {
        "premise": premise,
        "hypothesis": f"{who} is in the {where}.",
        "answer": label,
        "options": NLI_OPTIONS,
    }


@register("entail_color")
def color(rng: np.random.Generator) -> dict[str, Any]:
    """Colours of two objects; the hypothesis names an object's colour."""
    o1, o2, o3 = sample(rng, OBJECTS, 3)
    c1, c2, other = sample(rng, COLORS, 3)
    label = _label(rng)
    obj, col = {"yes": (o2, c2), "no": (o1, other), "it is not possible to tell": (o3, c1)}[label]
    premise = f"The {o1} is {c1}. The {o2} is {c2}."
    return {"premise": premise, "hypothesis": f"The {obj} is {col}.", "answer": label, "options": NLI_OPTIONS}


@register("entail_count")
def count(rng: np.random.Generator) -> dict[str, Any]:
    """Someone has n items; the hypothesis claims more than m of them, or names someone else."""
    a, other = sample(rng, NAMES, 2)
    item, n = pick(rng, ITEMS), int(rng.integers(2, 10))
    label = _label(rng)
    m = {"yes": int(rng.integers(0, n)), "no": int(rng.integers(n, 12))}.get(label, int(rng.integers(0, 12)))
    who = other if label == "it is not possible to tell" else a
    premise = f"{a} has {n} {item}."
    return {
        "premise": premise,
        "hypothesis": f"{who} has more than {m} {item}.",
        "answer": label,
        "options": NLI_OPTIONS,
    }
