"""Instruction Pre-Training: an instruction synthesizer and instruction-augmented pretraining corpora.

Python API (each stage also has an `instructkit synth` command; every setting is in `synth.config`):
- `generate_pairs(GenerateConfig)`: raw texts → pairs, multi-round, sharded, resumable.
- `build_corpus(CorpusConfig)`: texts + pairs → M-shot templated pretraining corpus (+ mixing).
- `make_training_data(TrainDataConfig)`: context-task data → synthesizer training rows.
- `evaluate_synthesizer(model, rows, seen)`: response F1 (seen/unseen) and pair statistics.
- `build_pretraining_corpus(PretrainCorpusConfig)`: raw texts → augmented or plain corpus + held-out QA
  (the `corpus` stage of `instructkit run`; `CorpusSpec` is the recipe's `corpus:` section).
- `train_default_synthesizer(out_dir, size)`: the tiny synthesizer trained offline (the `synthesizer`
  stage; `instructkit synth demo` runs the whole path as the recipe `synth_demo`).
- `train_synthesizer(out, SynthesizerTraining)` / `measure_base_and_tuned(...)`: a named model tuned
  into the synthesizer and scored against its untuned base (`corpus.synthesizer: trained`).
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "CorpusConfig": ".config",
    "CorpusSpec": ".config",
    "GenerateConfig": ".config",
    "PretrainCorpusConfig": ".config",
    "TrainDataConfig": ".config",
    "SynthesizerTraining": ".config",
    "train_synthesizer": ".trained_synthesizer",
    "measure_base_and_tuned": ".trained_synthesizer",
    "build_corpus": ".corpus",
    "train_default_synthesizer": ".default_synthesizer",
    "evaluate_synthesizer": ".measure",
    "Pair": ".markup",
    "SynthFormat": ".markup",
    "generate_pairs": ".generate",
    "ParseResult": ".parser",
    "parse_pairs": ".parser",
    "build_pretraining_corpus": ".pretrain_corpus",
    "make_training_data": ".training_data",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
