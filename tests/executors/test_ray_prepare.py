"""`data prepare|build --executor ray` on a local 2-CPU Ray cluster: the local folders, sound per-block packs."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'instructkit[ray]'")

from instructkit.data.mixture import build_mixture  # noqa: E402
from instructkit.data.mixture_config import MixtureConfig  # noqa: E402
from instructkit.data.prepare import PrepareConfig, prepare  # noqa: E402
from instructkit.executors.ray_build import build_mixture_ray  # noqa: E402
from instructkit.executors.ray_prepare import block_bounds, prepare_ray  # noqa: E402

TIMING_STATS = ("seconds", "examples_per_second")


@pytest.fixture(scope="module")
def chats(tmp_path_factory) -> Path:
    """Conversations of varied length (multi-turn, one over-long, one bad row) for packing."""
    rows = []
    for i in range(40):
        turns = [{"role": "user", "content": f"Question {i}: " + "why " * (i % 7)}]
        turns.append({"role": "assistant", "content": "because " * (1 + i % 5) + str(i)})
        if i % 4 == 0:
            turns += [{"role": "user", "content": "and then?"}, {"role": "assistant", "content": "done"}]
        rows.append({"messages": turns})
    rows[5] = {
        "messages": [{"role": "user", "content": "long " * 200}, {"role": "assistant", "content": "x"}]
    }
    rows[9] = {"messages": [{"role": "robot", "content": "x"}]}
    path = tmp_path_factory.mktemp("chats") / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(chats, tokenizer_dir, out, max_length: int = 64) -> PrepareConfig:
    return PrepareConfig(
        sources=[str(chats)],
        tokenizer=tokenizer_dir,
        out=str(out),
        pack=True,
        max_length=max_length,
        on_error="skip",
    )


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a prepared folder (its own path masked), less stats.json timings and the random id."""
    files = {
        str(p.relative_to(folder)): p.read_bytes().replace(str(folder).encode(), b"<out>")
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    stats = json.loads(files.pop("stats.json"))
    files["stats.json"] = json.dumps({k: v for k, v in stats.items() if k not in TIMING_STATS}).encode()
    state = json.loads(files.pop("state.json"))
    files["state.json"] = json.dumps({k: v for k, v in state.items() if k != "_fingerprint"}).encode()
    return files


def test_one_block_gives_the_local_folder(local_ray, chats, tokenizer_dir, tmp_path):
    local = prepare(_cfg(chats, tokenizer_dir, tmp_path / "local"), progress=False)
    on_ray = prepare_ray(_cfg(chats, tokenizer_dir, tmp_path / "ray"), progress=False)
    assert on_ray["rejected"] == local["rejected"] == 1 and local["truncated"] >= 1
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")


def test_blocks_pack_every_example_once(local_ray, chats, tokenizer_dir, tmp_path):
    local = prepare(_cfg(chats, tokenizer_dir, tmp_path / "local", 256), progress=False)
    blocked = prepare_ray(_cfg(chats, tokenizer_dir, tmp_path / "ray", 256), block_size=8, progress=False)
    ds = datasets.load_from_disk(str(tmp_path / "ray"))
    ids = sorted(i for pack in ds["example_ids"] for i in pack)
    assert ids == list(range(local["examples_out"]))  # none lost, none twice, indices stay global
    assert all(len(p) <= 256 for p in ds["input_ids"])
    assert blocked["tokens"] == local["tokens"] and blocked["packs"] >= local["packs"]
    assert blocked["packs"] == len(ds) > local["packs"]  # blocks of 8 really packed apart
    assert sorted(map(tuple, ds["input_ids"])) != sorted(
        map(tuple, datasets.load_from_disk(str(tmp_path / "local"))["input_ids"])
    )


def test_block_bounds_keep_every_block_at_least_block_size():
    assert block_bounds(5, 8) == [(0, 5)]
    assert block_bounds(8, 8) == [(0, 8)]
    assert block_bounds(15, 8) == [(0, 15)]
    assert block_bounds(16, 8) == [(0, 8), (8, 16)]
    assert block_bounds(23, 8) == [(0, 8), (8, 23)]


def test_ray_build_writes_the_local_folder_byte_for_byte(local_ray, tmp_path):
    config = MixtureConfig.model_validate(
        {
            "name": "t",
            "seed": 7,
            "tasks": [{"cluster": "arithmetic"}, {"cluster": "sentiment"}],
            "rate": {"cap": 20},
            "formats": {"zero_shot": 0.5, "few_shot": 0.3, "cot": 0.2},
        }
    )
    local = build_mixture(config, tmp_path / "local")
    on_ray = build_mixture_ray(config, tmp_path / "ray")
    assert on_ray == local and local["rows"] > 100
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ray").iterdir())
    for name in names:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name


def test_cli_prepare_on_ray_and_address_needs_ray(local_ray, chats, tokenizer_dir, tmp_path):
    from typer.testing import CliRunner

    from instructkit.cli.app import app

    args = ["data", "prepare", str(chats), "--tokenizer", tokenizer_dir, "--on-error", "skip", "--pack"]
    done = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ray"), "--executor", "ray"])
    assert done.exit_code == 0, done.output
    local = prepare(_cfg(chats, tokenizer_dir, tmp_path / "local", 2048), progress=False)
    assert json.loads((tmp_path / "ray" / "stats.json").read_text())["packs"] == local["packs"]
    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "x"), "--ray-address", "auto"])
    assert refused.exit_code != 0 and "--ray-address needs --executor ray" in str(refused.exception)
