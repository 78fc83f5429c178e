"""Small chat datasets prepared with a tiny tokenizer, and LoRA adapters on copies of a saved tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers.files import write_jsonl
from instructkit.data.prepare import PrepareConfig, prepare
from instructkit.train.config import TrainConfig

CHATS = [
    {
        "messages": [
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"The answer is {a + b}."},
        ]
    }
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]
]


def sum_chat(i: int) -> dict:
    """One user/assistant turn: "What is i plus i?" answered with the sum."""
    return {
        "messages": [
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": str(2 * i)},
        ]
    }


def append_chats(path: Path, start: int, count: int) -> None:
    """Append chats "What is i plus one?" / "It is i+1." for i in [start, start + count) to a JSONL file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for i in range(start, start + count):
            chat = [
                {"role": "user", "content": f"What is {i} plus one?"},
                {"role": "assistant", "content": f"It is {i + 1}."},
            ]
            handle.write(json.dumps({"messages": chat}) + "\n")


def prepare_chats(tmp_path: Path, tokenizer: str, out: str = "data", **settings) -> Path:
    source = write_jsonl(tmp_path / "chats.jsonl", CHATS)
    data = tmp_path / out
    prepare(
        PrepareConfig(sources=[source], tokenizer=tokenizer, out=str(data), max_length=64, **settings), False
    )
    return data


def adapter_on_copy(lora_run, tmp_path: Path) -> tuple[Path, Path]:
    """The trained adapter and its base copied to `tmp_path`, the adapter pointing at the copy."""
    base, adapter = (
        shutil.copytree(lora_run[0], tmp_path / "base"),
        shutil.copytree(lora_run[1], tmp_path / "adapter"),
    )
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(base)
    config_path.write_text(json.dumps(config))
    return base, adapter


def perturb_weights(folder: Path) -> None:
    """Change one weight of the model saved in `folder` (as a re-export or another checkpoint would)."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    name = next(n for n in tensors if n.endswith("q_proj.weight"))
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, str(path), metadata={"format": "pt"})


def lora_config(data: Path, out: Path, model: str, **settings) -> TrainConfig:
    fields = {"method": "lora", "lora_target_modules": ["q_proj"], "max_steps": 1, "progress": False}
    fields |= {"gradient_accumulation_steps": 1, **settings}
    return TrainConfig(data=data, output_dir=out, model=model, **fields)
