"""Language generators: sentiment of template sentences and reading comprehension of short paragraphs."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import pick, register, sample
from .words import EMOTIONS, FILM_PARTS, ITEMS, NAMES, NEGATIVE, PLACES, POSITIVE, PRODUCTS

SENTIMENTS = ["positive", "negative"]


def _polar_word(rng: np.random.Generator) -> tuple[str, str]:
    label = pick(rng, SENTIMENTS)
    return label, pick(rng, POSITIVE if label == "positive" else NEGATIVE)


@register("sentiment_sentence")
def sentence(rng: np.random.Generator) -> dict[str, Any]:
    """'The day at the park was lovely.' → positive."""
    label, word = _polar_word(rng)
    text = f"The day at the {pick(rng, PLACES)} was {word}."
    return {"sentence": text, "answer": label, "options": SENTIMENTS}


@register("sentiment_product_review")
def product_review(rng: np.random.Generator) -> dict[str, Any]:
    """A one-line product review with a clear polarity."""
    label, word = _polar_word(rng)
    text = f"I bought this {pick(rng, PRODUCTS)} last week and it is {word}."
    return {"sentence": text, "answer": label, "options": SENTIMENTS}


@register("sentiment_movie_review")
def movie_review(rng: np.random.Generator) -> dict[str, Any]:
    """Two aspects of a film, both with the same polarity."""
    label = pick(rng, SENTIMENTS)
    words = sample(rng, POSITIVE if label == "positive" else NEGATIVE, 2)
    parts = sample(rng, FILM_PARTS, 2)
    text = f"The {parts[0]} was {words[0]} and the {parts[1]} was {words[1]}."
    return {"sentence": text, "answer": label, "options": SENTIMENTS}


@register("emotion_action")
def emotion(rng: np.random.Generator) -> dict[str, Any]:
    """Which emotion an action shows (joy / anger / sadness)."""
    label = pick(rng, sorted(EMOTIONS))
    text = f"{pick(rng, NAMES)} {pick(rng, EMOTIONS[label])}."
    return {"sentence": text, "answer": label, "options": sorted(EMOTIONS)}


def _story(rng: np.random.Generator) -> dict[str, Any]:
    name, friend = sample(rng, NAMES, 2)
    place, item = pick(rng, PLACES), pick(rng, ITEMS)
    paragraph = f"{name} went to the {place}. There, {name} bought some {item}. Later, {name} met {friend}."
    return {"paragraph": paragraph, "name": name, "friend": friend, "place": place, "item": item}


@register("reading_where")
def reading_where(rng: np.random.Generator) -> dict[str, Any]:
    """Where did the person go? The answer is a span of the paragraph."""
    story = _story(rng)
    return {**story, "question": f"Where did {story['name']} go?", "answer": story["place"]}


@register("reading_what")
def reading_what(rng: np.random.Generator) -> dict[str, Any]:
    """What did the person buy?"""
    story = _story(rng)
    return {**story, "question": f"What did {story['name']} buy?", "answer": story["item"]}


@register("reading_who")
def reading_who(rng: np.random.Generator) -> dict[str, Any]:
    """Whom did the person meet?"""
    story = _story(rng)
    return {**story, "question": f"Who did {story['name']} meet?", "answer": story["friend"]}
