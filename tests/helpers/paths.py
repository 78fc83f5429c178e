"""Where the tests find the repository, their fixture files and ../shared/data; the tiny tokenizer's corpus."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES_ROOT = REPO / "tests" / "fixtures"
SHARED_DATA = Path(os.environ.get("INSTRUCTKIT_SHARED_DATA", REPO.parent / "shared" / "data"))

TOKENIZER_CORPUS = [
    "What is 12 plus 35? The answer is 47.",
    "Write a short poem about the sea. The waves roll in and out.",
    "Is the following sentence positive or negative? I loved this movie. positive",
    "Read the paragraph and answer: where did Alice go? Alice went to the market.",
    "Hello, how are you today? I am fine, thank you for asking!",
    "Sort the list: 3 1 2. Answer: 1 2 3",
    "Translate to French: cat -> chat. dog -> chien.",
] * 40
