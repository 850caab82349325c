"""Imports sit at the top of a module unless moving them there would cost something: an import inside a function
must either put off a third-party package the module does not load already (torch, optuna, rasterio… kept out of
the CLI's start and of analysis/), or break a circle (the imported module imports this one). Read from the source,
not by importing it."""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pointseg", "sweeps", "analysis")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The modules an import statement loads, absolute: ``from .x import y`` in package p → p.x (and p.x.y when
    that is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if not MODULES[module].name == "__init__.py":
            package = package[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    return [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]


def _top_level_imports(module: str) -> list[str]:
    """What ``module`` imports when it is imported: statements outside functions (``if TYPE_CHECKING:`` excepted)."""
    out = []

    def visit(nodes):
        for n in nodes:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                continue
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                out.extend(_targets(n, module))
            elif isinstance(n, ast.ClassDef):
                visit(n.body)
            elif hasattr(n, "body"):
                visit(n.body)
                visit(getattr(n, "orelse", []))
                for h in getattr(n, "handlers", []):
                    visit(h.body)
                visit(getattr(n, "finalbody", []))
    visit(ast.parse(MODULES[module].read_text()).body)
    return out


def _parents(name: str) -> list[str]:
    """Importing a.b.c imports a and a.b first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def loads(module: str) -> frozenset[str]:
    """Every module importing ``module`` loads: internal modules by name, third-party and stdlib ones by top name."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        for name in _parents(m):
            if name in seen:
                continue
            seen.add(name)
            if name in MODULES:
                todo.extend(_top_level_imports(name))
    return frozenset(n if n in MODULES else n.split(".")[0] for n in seen)


def _third_party(names) -> set[str]:
    return {n for n in names if n.split(".")[0] not in PACKAGES and n not in sys.stdlib_module_names}


def needless_function_imports() -> list[str]:
    out = []
    for module, path in sorted(MODULES.items()):
        already = loads(module)
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                names = _targets(node, module)
                for target in names[:1] if isinstance(node, ast.ImportFrom) else names:
                    top = target.split(".")[0]
                    if target in MODULES or top in PACKAGES:
                        new = _third_party(loads(target)) - _third_party(already)
                        circle = module in loads(target)
                        if not new and not circle:
                            out.append(f"{path.relative_to(ROOT)}:{node.lineno} {fn.name}: {target} (loads nothing "
                                       "new, and imports no circle)")
                    elif top in sys.stdlib_module_names and top not in ("fcntl", "msvcrt"):
                        out.append(f"{path.relative_to(ROOT)}:{node.lineno} {fn.name}: {target} (the standard "
                                   "library)")
                    elif top in already:
                        out.append(f"{path.relative_to(ROOT)}:{node.lineno} {fn.name}: {target} (loaded already)")
    return out


def test_imports_inside_functions_only_put_off_a_package_or_break_a_circle():
    assert needless_function_imports() == []


def test_the_rule_sees_a_needless_import(tmp_path, monkeypatch):
    """The checker itself: a stdlib import, an import of a package loaded already, and a module of ours that loads
    no package this one lacks are each caught; one that puts off the trainer's packages (smp, timm…) is not."""
    src = ("import torch\nimport yaml\n\n\ndef f():\n    import json\n    import torch.nn\n"
           "    from .config import Config\n    from .train import fit\n")
    fake = tmp_path / "fake.py"
    fake.write_text(src)
    monkeypatch.setitem(MODULES, "pointseg.fake", fake)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    loads.cache_clear()
    try:
        found = [line.split(" ", 1)[1] for line in needless_function_imports() if line.startswith("fake.py")]
    finally:
        loads.cache_clear()
    assert [f.split(" (")[0] for f in found] == ["f: json", "f: torch.nn", "f: pointseg.config"]
