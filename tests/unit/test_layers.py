"""Arrows point down: repo/ imports nothing above it, walecompat/ nothing of backup/ or above, and there is
no import cycle between the layers. Every import counts, also one made inside a function."""

from __future__ import annotations

import ast
import pathlib

import walship

SRC = pathlib.Path(walship.__file__).parent

# lower number: lower layer; a module may import its own layer and those below
LAYERS = {"errors": 0, "config": 0, "logs": 0, "codec": 0, "streams": 0, "processes": 0, "flatjson": 0, "crypto": 0, "storage": 0,
          "pipeline": 0, "restorefs": 0, "reporting": 0,
          "pg": 1, "repo": 2, "walecompat": 3, "archive": 4, "receive": 4, "backup": 5, "monitoring": 6, "verify": 7,
          "cli": 8}
# imports across layers still to go (pyproject.toml's import-linter contract names the same ones): none
PENDING: set[tuple[str, str]] = set()


def _imports(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [name for name in found if name.startswith("walship.")]


def _layer(module_path: str) -> int | None:
    top = module_path.split(".")[0].split("/")[0]
    return LAYERS.get(top.removesuffix(".py"))


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        own = path.relative_to(SRC).as_posix()
        mine = _layer(own)
        if mine is None:
            continue
        for name in _imports(path):
            theirs = _layer(name[len("walship."):])
            if theirs is not None and theirs > mine and (own, name) not in PENDING:
                upward.append(f"{own} imports {name}")
    assert upward == []


def test_repo_and_walecompat_stand_below_backup():
    for package, forbidden in (("repo", ("backup", "walecompat", "archive", "monitoring", "verify", "cli")),
                               ("walecompat", ("backup", "archive", "monitoring", "verify", "cli"))):
        for path in sorted((SRC / package).glob("*.py")):
            own = path.relative_to(SRC).as_posix()
            bad = [n for n in _imports(path) if n.split(".")[1] in forbidden and (own, n) not in PENDING]
            assert bad == [], f"{own} imports {bad}"
