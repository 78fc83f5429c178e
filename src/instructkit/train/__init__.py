"""Training: tiny model factory, model loading, collators and the Trainer wrapper."""

from .config import TrainConfig
from .models import load_model_and_tokenizer
from .trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "load_model_and_tokenizer", "train"]
