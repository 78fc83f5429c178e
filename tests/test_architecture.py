"""The package's import graph follows the declared layers (the README's architecture section).

Layers import downward only; no module imports a module of a higher layer, not even inside a
function, and no two modules import each other, not even inside functions. Models are loaded in one
place: `from_pretrained` is called only in `models/` and the backend factory. The README's
architecture table names modules: each must exist, so the document cannot drift from the code.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from helpers.paths import REPO

PACKAGE = REPO / "src" / "instructkit"
README = REPO / "README.md"

# Lowest first: each layer is a package (foundation: the modules at the package root). A module belongs to
# the layer of its top-level package; `__main__` is the command entry (`python -m instructkit`).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ()),
    ("models", ("models",)),
    ("data", ("data",)),
    ("train", ("train",)),
    ("evaluate", ("evaluate",)),
    ("synth", ("synth",)),
    ("executors", ("executors",)),
    ("pipeline", ("pipeline",)),
    ("commands", ("cli", "__main__")),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _layer(module: str) -> int | None:
    """The layer of `module`'s top-level package; a plain module at the root is foundation."""
    top = module.split(".")[0]
    for index, (_, packages) in enumerate(LAYERS):
        if top in packages:
            return index
    return 0 if "." not in module and not (PACKAGE / module).is_dir() else None


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Dotted in-package names an ImportFrom refers to (relative or `instructkit.` absolute)."""
    if node.level == 0:
        if not (node.module or "").startswith("instructkit"):
            return []
        base = node.module.split(".")[1:]
    else:
        here = module.split(".") if module else []
        anchor = here if is_package else here[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
        base = anchor + (node.module.split(".") if node.module else [])
    names = [".".join(base)] if base else []
    if not node.module:  # `from . import x`: x is a module
        names = [".".join(base + [alias.name]) for alias in node.names]
    return [n for n in names if n]


def import_graph() -> dict[str, list[tuple[str, bool]]]:
    """module -> [(imported module, imported at module level)] for every module of the package."""
    graph: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = {id(n) for n in tree.body}
        edges = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for target in _resolve(module, path.name == "__init__.py", node):
                    edges.append((target, id(node) in top_level))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("instructkit."):
                        edges.append((alias.name.split(".", 1)[1], id(node) in top_level))
        graph[module] = edges
    return graph


def test_every_module_belongs_to_a_layer():
    unplaced = [m for m in import_graph() if m and _layer(m) is None]
    assert not unplaced, f"modules in no declared layer: {unplaced}"


def test_imports_flow_downward_only():
    violations = []
    for module, edges in import_graph().items():
        if not module:
            continue
        for target, _ in edges:
            mine, theirs = _layer(module), _layer(target)
            if theirs is not None and mine is not None and theirs > mine:
                violations.append(f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert not violations, "upward imports:\n" + "\n".join(sorted(set(violations)))


def test_no_import_circles_even_inside_functions():
    """No two modules import each other, not even through an import inside a function (such a circle
    only works while the function-level side stays inside functions, and hides which module is lower)."""
    graph = {m: {t for t, _ in edges if t != m} for m, edges in import_graph().items()}
    graph = {m: {t for t in targets if t in graph} for m, targets in graph.items()}
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def _readme_modules() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    return sorted(set(re.findall(r"`instructkit\.([a-z_.]+)`", section)))


def _readme_entry_points() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    return sorted(set(re.findall(r"`instructkit\.([a-z_.]+):([a-z_]+)`", section)))


def _readme_files() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Where each command goes", 1)[1].split("\n## ", 1)[0]
    table = section.split("\n\n", 2)[2].split("\n\n", 1)[0]  # the table, after its two-paragraph lead
    return sorted(set(re.findall(r"`([a-z_/]+(?:\.py|/))`", table)))


def test_readme_command_table_names_real_entry_functions_and_files():
    """The "command → entry function → files" table: each function exists where it says, each file too."""
    entries = _readme_entry_points()
    assert len(entries) >= 15
    for module, function in entries:
        assert callable(getattr(importlib.import_module(f"instructkit.{module}"), function, None)), (
            f"instructkit.{module} has no function {function}"
        )
    files = _readme_files()
    assert len(files) >= 30
    missing = [f for f in files if not (PACKAGE / f).exists()]
    assert not missing, f"the README's command table names files that do not exist: {missing}"


def test_the_root_holds_only_foundation_modules():
    """Every plain module at the package root is foundation: it imports no package of a higher layer."""
    root = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert root and all(_layer(m) == 0 for m in root)
    for module, edges in import_graph().items():
        if module in root:
            above = [t for t, _ in edges if (_layer(t) or 0) > 0]
            assert not above, f"{module} sits at the root but imports {above}"


def test_readme_architecture_names_real_modules():
    named = _readme_modules()
    assert len(named) >= 15, "the architecture section should name the module of every stage"
    for module in named:
        importlib.import_module(f"instructkit.{module}")


@pytest.mark.parametrize("module", ["instructkit.cli"])
def test_the_cli_imports_no_heavy_library(module):
    """`instructkit --help` stays fast: the command modules import torch/transformers/datasets lazily."""
    import subprocess
    import sys

    code = f"import {module}, sys; print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing {module} pulled in {out.strip()}"


def _defined_names(module: str) -> set[str] | None:
    """Names a package module binds at top level (defs, classes, assignments, imports, lazy exports)."""
    path = PACKAGE / (module.replace(".", "/") + ".py")
    if not path.is_file():
        path = PACKAGE / module.replace(".", "/") / "__init__.py"
    if not path.is_file():
        return None
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            if isinstance(node.value, ast.Dict):  # a lazy-export table: {"name": ".module"}
                names.update(k.value for k in node.value.keys if isinstance(k, ast.Constant))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    if path.name == "__init__.py":  # submodules are importable names of a package
        names.update(p.stem for p in path.parent.glob("*.py"))
        names.update(p.name for p in path.parent.iterdir() if (p / "__init__.py").is_file())
    return names


def test_every_imported_name_exists_even_inside_functions():
    """A function-level import runs only when its branch does: a name removed from its module must
    fail here, not in a user's rarely taken path (e.g. `synth generate` with the default model)."""
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not node.module and node.level == 0:
                continue
            targets = _resolve(module, path.name == "__init__.py", node)
            if not node.module or len(targets) != 1:
                continue
            defined = _defined_names(targets[0])
            if defined is None:
                missing.append(f"{module}: module {targets[0]} does not exist")
                continue
            missing += [
                f"{module}: {targets[0]} has no {a.name}" for a in node.names if a.name not in defined
            ]
    assert not missing, "\n".join(missing)


# Where `from_pretrained` may be called: the models layer resolves and loads every model reference,
# and the backend factory builds the hf backend (HFBackend.from_pretrained loads through models/).
FROM_PRETRAINED_HOMES = ("models", "evaluate.backends.load")


def from_pretrained_uses(tree: ast.AST) -> list[int]:
    """Line numbers where a `.from_pretrained` attribute is used (called or passed on)."""
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "from_pretrained"
    )


def test_from_pretrained_used_only_in_models_and_the_backend_factory():
    """One way to resolve and load a model: a module that called AutoTokenizer/AutoConfig/... itself
    would skip `pretrained:` names, GGUF files, the safetensors-only and remote-code rules."""
    outside = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if any(module == home or module.startswith(home + ".") for home in FROM_PRETRAINED_HOMES):
            continue
        lines = from_pretrained_uses(ast.parse(path.read_text(encoding="utf-8")))
        outside += [f"{module}:{line}" for line in lines]
    assert not outside, "from_pretrained outside models/ and the backend factory:\n" + "\n".join(outside)


def test_the_from_pretrained_check_sees_calls_and_references():
    """The check above finds the forms a loader takes (a call, a method passed on), not definitions."""
    code = (
        "from transformers import AutoConfig\n"
        "def f(p):\n"
        "    return AutoConfig.from_pretrained(p)\n"
        "load = AutoTokenizer.from_pretrained\n"
        "class B:\n"
        "    def from_pretrained(cls, p): ...\n"
    )
    assert from_pretrained_uses(ast.parse(code)) == [3, 4]


def sha256_uses(tree: ast.AST) -> list[int]:
    """Line numbers where sha256 is taken from hashlib directly: `hashlib.sha256`,
    `from hashlib import sha256`, `hashlib.new("sha256")`."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "sha256":
            hit = isinstance(node.value, ast.Name) and node.value.id == "hashlib"
        elif isinstance(node, ast.ImportFrom):
            hit = node.module == "hashlib" and any(alias.name == "sha256" for alias in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            first = node.args[0]
            named = isinstance(first, ast.Constant) and str(first.value).lower() == "sha256"
            hit = node.func.attr == "new" and named
        else:
            hit = False
        if hit:
            lines.append(node.lineno)
    return sorted(lines)


def test_sha256_is_taken_only_in_fingerprint():
    """One sha256 (`fingerprint.sha256_hex`, `file_chunks`): every digest the caches and records
    compare is made the same way, so two spellings of one hash cannot drift apart."""
    outside = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module != "fingerprint":
            outside += [
                f"{module}:{line}" for line in sha256_uses(ast.parse(path.read_text(encoding="utf-8")))
            ]
    assert not outside, "hashlib sha256 outside fingerprint.py:\n" + "\n".join(outside)
    assert sha256_uses(ast.parse((PACKAGE / "fingerprint.py").read_text(encoding="utf-8")))


def test_the_sha256_check_sees_each_spelling():
    code = (
        "import hashlib\n"
        "a = hashlib.sha256(b'x')\n"
        "from hashlib import sha256\n"
        "b = hashlib.new('SHA256')\n"
        "c = hashlib.blake2b(b'x')\n"
        "d = self.sha256\n"
    )
    assert sha256_uses(ast.parse(code)) == [2, 3, 4]
