"""The built-in chat templates, selectable by name for tokenizers that carry none.

Each is a Jinja chat template in the Hugging Face convention (`messages`, `add_generation_prompt`,
`bos_token`, `eos_token`). The text a template emits right after an assistant's content (the
end-of-turn marker) is trained on; the separator that opens the next turn is not.
"""

from __future__ import annotations

# Tülu: one format for every source (open-instruct). The newline between turns belongs to the next turn.
TULU = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] }}"
    "{% else %}{{ '<|assistant|>\\n' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n<|assistant|>\\n' }}{% endif %}"
)


CHATML = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n<|im_start|>assistant\\n' }}{% endif %}"
)


LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


# Plain: for base models and pretraining-style text. Turns separated by blank lines, replies end in EOS.
PLAIN = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n\\n' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ message['content'] }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\n' }}{% endif %}"
)


BUILTIN_TEMPLATES: dict[str, str] = {"tulu": TULU, "chatml": CHATML, "llama3": LLAMA3, "plain": PLAIN}


# Special tokens each template needs as single tokens (added to tiny tokenizers; checked for others).
TEMPLATE_SPECIAL_TOKENS: dict[str, list[str]] = {
    "tulu": ["<|system|>", "<|user|>", "<|assistant|>"],
    "chatml": ["<|im_start|>", "<|im_end|>"],
    "llama3": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "plain": [],
}
