"""Generated paragraphs with several questions each, offline and seeded: data for the tiny synthesizer.

Each generator writes a short paragraph of facts and one question per fact, whose answer is a span
of the paragraph. Rows use the context-task schema of `training_data`: dataset, context,
instruction, response (one row per question, several rows per context).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

FIRST = [
    "Alma",
    "Bruno",
    "Clara",
    "Dario",
    "Elena",
    "Felix",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Leon",
    "Mila",
    "Nils",
    "Olga",
    "Pavel",
    "Rosa",
    "Sami",
    "Tara",
    "Umar",
    "Vera",
    "Wim",
    "Yara",
    "Zeno",
]
LAST = [
    "Berg",
    "Costa",
    "Dunn",
    "Ekman",
    "Farr",
    "Gallo",
    "Hale",
    "Ivers",
    "Jansen",
    "Kovac",
    "Lund",
    "Moreau",
]
TOWNS = [
    "Lindale",
    "Okerby",
    "Marston",
    "Redfield",
    "Ashcombe",
    "Brightwater",
    "Coldbrook",
    "Dunmore",
    "Eastleigh",
    "Fairhaven",
    "Glenrock",
    "Highmoor",
    "Ivywood",
    "Kingsbridge",
    "Larkspur",
    "Millford",
]
JOBS = ["baker", "weaver", "sailor", "teacher", "painter", "doctor", "farmer", "builder", "singer", "tailor"]
HOBBIES = ["chess", "fishing", "gardening", "rowing", "poetry", "cycling", "pottery", "astronomy"]
RIVERS = ["Amber", "Silver", "Stone", "Willow", "Crane", "Otter", "Heron", "Fox"]
FOODS = ["cheese", "apples", "bread", "honey", "fish", "cider", "plums", "pies"]
BUILDINGS = ["bridge", "tower", "library", "castle", "market", "harbour", "mill", "chapel"]


def _person(rng: random.Random) -> dict[str, Any]:
    """A short biography with five facts and their questions."""
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    town, job, hobby, year = (
        rng.choice(TOWNS),
        rng.choice(JOBS),
        rng.choice(HOBBIES),
        str(rng.randint(1700, 1990)),
    )
    friend = rng.choice(FIRST)
    facts = [
        (f"{name} was born in {town}.", f"Where was {name} born?", town),
        (f"{name} was born in the year {year}.", f"In which year was {name} born?", year),
        (f"{name} worked as a {job}.", f"What did {name} work as?", job),
        (f"In free time, {name} enjoyed {hobby}.", f"What did {name} enjoy?", hobby),
        (f"The best friend of {name} was {friend}.", f"Who was the best friend of {name}?", friend),
    ]
    return _rows("people", rng, facts)


def _town(rng: random.Random) -> dict[str, Any]:
    """A short description of a town with five facts and their questions."""
    town, river, food, building = (
        rng.choice(TOWNS),
        rng.choice(RIVERS),
        rng.choice(FOODS),
        rng.choice(BUILDINGS),
    )
    people, mayor = str(rng.randint(100, 99999)), f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    facts = [
        (f"{town} lies on the {river} river.", f"On which river does {town} lie?", river),
        (f"{town} has {people} inhabitants.", f"How many inhabitants does {town} have?", people),
        (f"The mayor of {town} is {mayor}.", f"Who is the mayor of {town}?", mayor),
        (f"{town} is famous for its {food}.", f"What is {town} famous for?", food),
        (
            f"The oldest building in {town} is the {building}.",
            f"What is the oldest building in {town}?",
            building,
        ),
    ]
    return _rows("towns", rng, facts)


def _rows(dataset: str, rng: random.Random, facts: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Facts in a fixed order (a tiny model learns that in minutes), then 2-4 of the questions asked."""
    context = " ".join(fact for fact, _, _ in facts)
    asked = rng.sample(range(len(facts)), rng.randint(2, 4))
    return {"dataset": dataset, "context": context, "qa": [(facts[i][1], facts[i][2]) for i in asked]}


GENERATORS: dict[str, Callable[[random.Random], dict[str, Any]]] = {"people": _person, "towns": _town}


def generate_paragraph_rows(dataset: str, size: int, seed: int = 0) -> list[dict[str, str]]:
    """Context-task rows (dataset, context, instruction, response) for `size` paragraphs of `dataset`."""
    rng = random.Random(f"{seed}:{dataset}")
    rows: list[dict[str, str]] = []
    for _ in range(size):
        para = GENERATORS[dataset](rng)
        rows += [
            {"dataset": dataset, "context": para["context"], "instruction": q, "response": a}
            for q, a in para["qa"]
        ]
    return rows


def generate_qa_paragraphs(size: int, seed: int = 0) -> list[dict[str, Any]]:
    """Paragraphs (id, dataset, text, qa) alternating generators: raw text with gold questions about it."""
    rows = []
    for i in range(size):
        dataset = list(GENERATORS)[i % len(GENERATORS)]
        para = GENERATORS[dataset](random.Random(f"{seed}:raw:{i}"))
        rows.append({"id": str(i), "dataset": dataset, "text": para["context"], "qa": para["qa"]})
    return rows
