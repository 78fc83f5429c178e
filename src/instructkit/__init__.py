"""instructkit: instruction tuning end to end (data, mixtures, masks, packing, training, evaluation)."""

__version__ = "0.1.0"
