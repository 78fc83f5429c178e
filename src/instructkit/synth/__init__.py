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

from ..lazy import lazy_exports

_EXPORTS = {
    "CorpusConfig": ".corpus",
    "build_corpus": ".corpus",
    "run_default_demo": ".demo",
    "train_default_synthesizer": ".demo",
    "evaluate_synthesizer": ".measure",
    "Pair": ".markup",
    "SynthFormat": ".markup",
    "GenerateConfig": ".generate",
    "generate_pairs": ".generate",
    "ParseResult": ".parser",
    "parse_pairs": ".parser",
    "PretrainCorpusConfig": ".pretrain_corpus",
    "build_pretraining_corpus": ".pretrain_corpus",
    "TrainDataConfig": ".training_data",
    "make_training_data": ".training_data",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
