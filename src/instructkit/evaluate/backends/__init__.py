"""Model backends behind one interface: transformers (`hf`), vLLM (GPU extra), OpenAI-compatible HTTP."""

from .base import Backend
from .hf import HFBackend
from .openai_compat import OpenAICompatBackend

__all__ = ["Backend", "HFBackend", "OpenAICompatBackend"]
