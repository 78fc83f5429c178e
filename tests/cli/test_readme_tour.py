"""The README's tour runs as printed: every command of its bash blocks, in order, from an empty folder,
with the data found through the documented `INSTRUCTKIT_DATA_ROOT`.

The commands are read from the README itself, so an edit there is tested here. Sizes are made small
by appending documented options (`--max-steps 2`, `--limit 1`, `--dry-run`, ...) and by pointing the
variable at a trimmed copy of ../shared/data (the same layout and files, fewer rows); the few
commands that cannot run here are skipped with their reason below. Each rule must match a command,
so a rule for a command that left the README fails the test instead of going stale.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.paths import REPO
from instructkit.cli.app import app

README = REPO / "README.md"
DATA_VARIABLE = "INSTRUCTKIT_DATA_ROOT"

# Rows kept per file of the trimmed data copy (every file is kept, so catalog task paths still match).
TRIMMED = {"p3_t0_subset": 12, "gsm8k": 24, "raw_text": 4}
# Trimmed to fewer files where a loader evaluates every file present (MMLU subjects, BBH tasks).
ONLY_FILES = {
    "mmlu": ["dev/anatomy_dev.csv", "test/anatomy_test.csv"],
    "bbh": ["bbh/navigate.json", "cot-prompts/navigate.txt"],
}


@dataclass
class Rule:
    """What the test does to the commands `match` finds (a regex over the words, comment left out)."""

    match: str
    append: list[str] = field(default_factory=list)
    replace: dict[str, str] = field(default_factory=dict)
    skip: str = ""
    exit_code: int = 0
    said: str = ""  # text the command must print (or fail with)


RULES = [
    Rule(r"^instructkit train ", append=["--max-steps", "2"]),
    Rule(r"Qwen/Qwen2\.5-0\.5B", skip="downloads a 0.5B model from the hub (the tests run offline)"),
    Rule(r"^instructkit eval run ", append=["--limit", "1"]),
    Rule(r"--suite flan", said="tydiqa left out"),
    Rule(r"^instructkit synth train-data ", replace={":500": ":16", ":300": ":8"}),
    Rule(r"^instructkit synth generate ", append=["--limit", "3", "--max-new-tokens", "24"]),
    Rule(
        r"^instructkit synth demo ",
        skip="the synth_demo recipe, about a minute: tests/pipeline/test_synth_demo.py runs it",
    ),
    Rule(r"^instructkit run( smollm2-cpu| ablations/\S+)?$", append=["--dry-run"]),
    Rule(r"^instructkit doctor", append=["--no-hub", "--no-attention"]),
    Rule(r"^instructkit doctor --recipe ", exit_code=1, said="cuda"),
]


@dataclass
class Command:
    """One command of the tour: its text as printed, or a file a heredoc writes."""

    text: str
    writes: Path | None = None
    content: str = ""


def tour_commands(readme: str) -> list[Command]:
    """The commands of the bash blocks of the README's `## Tour` section, in order."""
    section = readme.split("\n## Tour\n", 1)[1].split("\n## ", 1)[0]
    commands: list[Command] = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        lines = block.replace("\\\n", " ").splitlines()
        while lines:
            line = lines.pop(0)
            heredoc = re.fullmatch(r"cat > (\S+) <<'(\w+)'", line.strip())
            if heredoc:
                end = lines.index(heredoc.group(2))
                body, lines = lines[:end], lines[end + 1 :]
                commands.append(Command(line, Path(heredoc.group(1)), "\n".join(body) + "\n"))
            elif shlex.split(line, comments=True):
                commands.append(Command(line))
    return commands


def argv(text: str) -> list[str]:
    """The words bash would pass: quotes removed, variables expanded, globs matched."""
    words = []
    for word in shlex.split(text, comments=True):
        word = os.path.expandvars(word)
        words += sorted(glob(word)) if "*" in word else [word]
    return words


def rules_for(command: Command) -> list[Rule]:
    words = " ".join(shlex.split(command.text, comments=True))
    return [r for r in RULES if re.search(r.match, words)]


def _replaced(word: str, rules: list[Rule]) -> str:
    for rule in rules:
        for old, new in rule.replace.items():
            word = word.replace(old, new)
    return word


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """../shared/data with fewer rows (TRIMMED) and files (ONLY_FILES); everything else linked."""
    shared = request.getfixturevalue("shared_data")
    out = tmp_path_factory.mktemp("small_data")
    for entry in sorted(shared.iterdir()):
        if entry.name in TRIMMED:
            (out / entry.name).mkdir()
            for path in sorted(entry.iterdir()):
                lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
                keep = lines if path.suffix != ".jsonl" else lines[: TRIMMED[entry.name]]
                (out / entry.name / path.name).write_text("".join(keep), encoding="utf-8")
        elif entry.name in ONLY_FILES:
            for name in ONLY_FILES[entry.name]:
                (out / entry.name / name).parent.mkdir(parents=True, exist_ok=True)
                (out / entry.name / name).symlink_to(entry / name)
        else:
            (out / entry.name).symlink_to(entry)
    return out


def test_the_tour_is_read_from_the_readme():
    commands = tour_commands(README.read_text(encoding="utf-8"))
    texts = [c.text for c in commands]
    assert texts[0].startswith(f"export {DATA_VARIABLE}=")
    assert any(c.writes == Path("mix.yaml") and "holdout_clusters" in c.content for c in commands)
    assert sum(t.startswith("instructkit ") for t in texts) >= 25
    for rule in RULES:  # a rule whose command left the README must go too
        assert any(rule in rules_for(c) for c in commands), f"no tour command matches {rule.match!r}"


@pytest.mark.slow
@pytest.mark.shared
def test_every_tour_command_runs_from_an_empty_folder(small_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATA_VARIABLE, raising=False)  # only the tour's own `export` may set it
    timings = []
    for command in tour_commands(README.read_text(encoding="utf-8")):
        rules = rules_for(command)
        if any(r.skip for r in rules):
            continue
        if command.writes is not None:
            command.writes.write_text(command.content, encoding="utf-8")
            continue
        words = argv(command.text)
        if words[0] == "export":  # the documented variable, pointed at the trimmed copy
            name, _, _ = words[1].partition("=")
            assert name == DATA_VARIABLE
            monkeypatch.setenv(name, str(small_data))
            continue
        assert words[0] == "instructkit", command.text
        args = [_replaced(w, rules) for w in words[1:]] + [a for r in rules for a in r.append]
        start = time.perf_counter()
        result = CliRunner().invoke(app, args)
        timings.append((round(time.perf_counter() - start, 1), command.text[:70]))
        said = result.output + (str(result.exception) if result.exception else "")
        expected = max((r.exit_code for r in rules), default=0)
        assert result.exit_code == expected, f"{command.text}\n→ exit {result.exit_code}:\n{said[-3000:]}"
        for rule in rules:
            assert rule.said in said, f"{command.text}: expected {rule.said!r} in:\n{said[-3000:]}"
    print("\n".join(f"{seconds:6.1f} s  {text}" for seconds, text in timings))
    assert len(timings) >= 23 and Path("cmp.md").is_file() and Path("runs/ipt").is_dir()
    assert set(json.loads(Path("runs/loco/splits.json").read_text())["splits"]) == {
        "arithmetic",
        "summarization",
    }
    flan = json.loads(Path("runs/eval-flan/results.json").read_text())["groups"]
    assert set(flan) == {"mmlu", "bbh_direct", "bbh_cot", "mgsm_direct", "mgsm_cot"}  # offline: no TyDiQA
