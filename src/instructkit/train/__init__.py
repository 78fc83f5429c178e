"""Training: tiny model factory, model loading, collators and the Trainer wrapper (imported lazily)."""

from ..lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": ".config",
    "load_model_and_tokenizer": ".models",
    "TrainResult": ".run",
    "train": ".run",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
