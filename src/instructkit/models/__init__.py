"""Models and tokenizers, for every stage: `tiny:` presets, local paths, hub ids, GGUF files, the
pinned real model, and the tokenizer identity a prepared dataset records (imported lazily).

Every reference is resolved and loaded in `loading` (`resolve_source`, `load_model`,
`load_or_train_tokenizer`); nothing outside `models/` and the backend factory calls `from_pretrained`."""

from ..lazy import lazy_exports

_EXPORTS = {
    "BUILTIN_TEMPLATES": ".chat_templates",
    "TINY_PRESETS": ".tiny",
    "build_tiny_model": ".tiny",
    "default_tokenizer": ".tiny",
    "is_tiny": ".tiny",
    "train_tiny_tokenizer": ".tiny",
    "import_gguf": ".gguf",
    "load_causal_lm": ".loading",
    "load_config": ".loading",
    "load_model": ".loading",
    "load_model_and_tokenizer": ".loading",
    "load_or_train_tokenizer": ".loading",
    "load_tokenizer": ".loading",
    "resolve_source": ".loading",
    "tokenizer_identity": ".identity",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
