"""ARCHITECTURE.md's rule: no module imports another subpackage's private ``_module``."""

import ast
from pathlib import Path

import eosflow

SRC = Path(eosflow.__file__).parent


def _imports(path: Path):
    """(line, the dotted name each import names, relative ones resolved) in ``path``."""
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *module.split(".")]).rstrip(".")
            for alias in node.names:  # from pkg import _module names it too
                yield node.lineno, f"{module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def test_no_module_imports_another_subpackages_private_module():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        own = path.relative_to(SRC.parent).parts[:2]  # ("eosflow", subpackage or module)
        for line, name in _imports(path):
            parts = name.split(".")
            if parts[0] != "eosflow" or len(parts) < 3:
                continue  # another library, or a top-level eosflow module (_tree, _errors, ...)
            if parts[1] != own[1] and any(p.startswith("_") for p in parts[2:]):
                bad.append(f"{path.relative_to(SRC)}:{line} imports {name}")
    assert not bad, "\n".join(bad)
