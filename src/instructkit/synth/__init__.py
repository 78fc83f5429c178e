"""Instruction Pre-Training: an instruction synthesizer and instruction-augmented pretraining corpora.

Python API (each stage also has an `instructkit synth` command):
- `generate_pairs(GenerateConfig)`: raw texts → pairs, multi-round, sharded, resumable.
- `build_corpus(CorpusConfig)`: texts + pairs → M-shot templated pretraining corpus (+ mixing).
- `make_training_data(TrainDataConfig)`: context-task data → synthesizer training rows.
- `evaluate_synthesizer(model, rows, seen)`: response F1 (seen/unseen) and pair statistics.
- `build_pretraining_corpus(PretrainCorpusConfig)`: raw texts → augmented or plain corpus + held-out QA
  (the `corpus` stage of `instructkit run`).
- `run_default_demo(out_dir, size)`: the whole path on CPU with a tiny synthesizer.
"""

from .corpus import CorpusConfig, build_corpus
from .demo import run_default_demo, train_default_synthesizer
from .evaluate import evaluate_synthesizer
from .format import Pair, SynthFormat
from .generate import GenerateConfig, generate_pairs
from .parser import ParseResult, parse_pairs
from .pretrain_corpus import PretrainCorpusConfig, build_pretraining_corpus
from .training_data import TrainDataConfig, make_training_data

__all__ = [
    "CorpusConfig",
    "GenerateConfig",
    "Pair",
    "ParseResult",
    "PretrainCorpusConfig",
    "SynthFormat",
    "TrainDataConfig",
    "build_corpus",
    "build_pretraining_corpus",
    "evaluate_synthesizer",
    "generate_pairs",
    "make_training_data",
    "parse_pairs",
    "run_default_demo",
    "train_default_synthesizer",
]
