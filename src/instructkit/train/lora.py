"""Model and tokenizer construction: hub/local loading and `tiny:<preset>` models for CPU runs and tests.

A tiny model is a randomly initialised Llama-architecture `LlamaForCausalLM`; its tokenizer is a
byte-level BPE trained locally with `tokenizers` (digits split one per token, so small models can
learn arithmetic), wrapped as a `PreTrainedTokenizerFast` carrying the `tulu` chat template.

A GGUF file (or a directory holding one) is accepted wherever a model or tokenizer is: transformers
reads it (the `gguf` package) and dequantizes its weights; `import_gguf` writes it out once as a
safetensors directory so later runs load in a fraction of a second.
"""

from __future__ import annotations


def apply_lora(
    model, r: int = 16, alpha: int = 32, dropout: float = 0.05, target_modules="all-linear", qlora=False
):
    """Wrap `model` with peft LoRA adapters on `target_modules` (names, or "all-linear"); base weights frozen."""
    import warnings

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`; the warning is theirs, not the user's.
    warnings.filterwarnings(
        "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )

    if qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)
