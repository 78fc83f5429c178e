"""Small word lists the procedural generators draw from (short, common, tokenizer-friendly)."""

from __future__ import annotations

NAMES = ("Alice", "Bob", "Carol", "Dan", "Eve", "Frank", "Grace", "Hana", "Ivan", "Judy", "Ken", "Lena")
PLACES = ("market", "park", "school", "library", "beach", "garden", "kitchen", "office", "museum", "station")
ITEMS = ("apples", "pens", "books", "cards", "eggs", "stamps", "shells", "coins", "cookies", "balls")
OBJECTS = ("ball", "cup", "hat", "box", "car", "kite", "lamp", "bag", "chair", "book")
COLORS = ("red", "blue", "green", "yellow", "black", "white", "pink", "brown")
WORDS = (
    "cat",
    "dog",
    "sun",
    "tree",
    "book",
    "lamp",
    "river",
    "apple",
    "house",
    "cloud",
    "stone",
    "bread",
    "chair",
    "plant",
    "water",
    "light",
    "music",
    "table",
    "green",
    "smile",
    "dream",
    "horse",
    "ocean",
    "train",
    "paper",
    "sky",
    "moon",
    "fish",
    "bird",
    "door",
    "road",
    "milk",
    "rain",
    "snow",
    "star",
    "wind",
    "fire",
    "leaf",
)
POSITIVE = ("great", "wonderful", "lovely", "excellent", "delightful", "fantastic", "pleasant", "brilliant")
NEGATIVE = ("terrible", "awful", "boring", "dreadful", "horrible", "poor", "disappointing", "dull")
PRODUCTS = ("phone", "blender", "jacket", "lamp", "backpack", "kettle", "camera", "chair")
FILM_PARTS = ("acting", "story", "music", "ending", "script", "photography")
EMOTIONS = {
    "joy": ("smiled all day", "laughed with friends", "danced in the kitchen", "sang happily"),
    "anger": ("slammed the door", "shouted at the screen", "stormed out of the room", "kicked the wall"),
    "sadness": ("cried quietly", "stared at the rain", "missed an old friend", "sighed and looked down"),
}

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"


def pseudo_word(rng, min_syllables: int = 2, max_syllables: int = 3) -> str:
    """A pronounceable made-up word (consonant-vowel syllables), so string tasks have a large space."""
    n = int(rng.integers(min_syllables, max_syllables + 1))
    return "".join(
        CONSONANTS[int(rng.integers(len(CONSONANTS)))] + VOWELS[int(rng.integers(len(VOWELS)))]
        for _ in range(n)
    )
