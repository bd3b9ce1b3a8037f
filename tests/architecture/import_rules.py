"""The import rules of kzoo's layout, checked over every import statement (inside functions too).

    core        kzoo.* but the three below: models, layers, tokenizers, pipelines, runtime, io
    converters  kzoo.converters (the converters/ folder)
    export      kzoo.export (the export/ folder)
    cli         kzoo.cli (and kzoo.__main__, `python -m kzoo`): the composition root

Data flows one way (checkpoint -> converters -> model dir -> export -> runtime):
  * the core imports neither converters, export nor the cli;
  * converters and export import neither each other nor the cli;
  * kzoo.io, the lowest layer (files, Keras internals), imports nothing of kzoo but kzoo.io and
    kzoo.errors: the models, the converters and the exports build on it;
  * no module imports a private name (`_name`) of another module, nor reads one off a module.
`importlib.import_module("...")` with a literal name counts as an import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"kzoo": ROOT / "kzoo", "kzoo.converters": ROOT / "converters", "kzoo.export": ROOT / "export"}
FORBIDDEN = {  # part -> parts it must not import
    "core": {"converters", "export", "cli"},
    "converters": {"export", "cli"},
    "export": {"converters", "cli"},
    "cli": set(),
}


def part(module: str):
    """The part a kzoo module belongs to; None for modules outside kzoo."""
    if module != "kzoo" and not module.startswith("kzoo."):
        return None
    if module == "kzoo.__main__":
        return "cli"
    for name in ("converters", "export", "cli"):
        if module == f"kzoo.{name}" or module.startswith(f"kzoo.{name}."):
            return name
    return "core"


def kzoo_sources() -> dict:
    """{module name: (file, source)} for every Python file of the package, as installed."""
    found = {}
    for package, folder in PACKAGES.items():
        for file in sorted(folder.rglob("*.py")):
            rel = file.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if name.startswith("kzoo.") and package == "kzoo" and part(name) in ("converters", "export"):
                continue  # (no such folders inside kzoo/)
            found[name] = (file, file.read_text(encoding="utf-8"))
    return found


def _resolve(module, node, is_package):
    """The absolute module an ImportFrom names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module, source, is_package=False):
    """(line, imported module, imported name or None, bound name) for every import in `source`."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None, alias.asname or alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node, is_package)
            for alias in node.names:
                yield node.lineno, target, alias.name, alias.asname or alias.name
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.lineno, node.args[0].value, None, None


def _private(name):
    return name is not None and name.startswith("_") and not name.startswith("__")


def violations(sources: dict, known_modules=None) -> list:
    """Every broken rule in `sources` ({module: (file, source)}), as "file:line: what" strings."""
    known = set(known_modules or sources)
    found = []
    for module, (file, source) in sources.items():
        mine = part(module)
        is_package = Path(str(file)).name == "__init__.py"
        module_names = {}  # names bound to kzoo modules here -> the module
        for line, target, name, bound in imports(module, source, is_package):
            where = f"{file}:{line}"
            full = f"{target}.{name}" if name and f"{target}.{name}" in known else target
            theirs = part(full)
            if mine and theirs and theirs in FORBIDDEN[mine]:
                found.append(f"{where}: {module} ({mine}) imports {full} ({theirs})")
            if module.startswith("kzoo.io") and theirs and not full.startswith(("kzoo.io", "kzoo.errors")):
                found.append(f"{where}: {module} (io, the lowest layer) imports {full}")
            if theirs and _private(name):
                found.append(f"{where}: {module} imports the private name {name} of {target}")
            if theirs and bound:
                module_names[bound] = full if full in known or name is None else None
        for node in ast.walk(ast.parse(source)):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and module_names.get(node.value.id) and _private(node.attr)):
                found.append(f"{file}:{node.lineno}: {module} reads the private name {node.attr} "
                             f"of {module_names[node.value.id]}")
    return found


def outside_sources() -> dict:
    """Tests, benchmarks and scripts: they may import any part, but no private kzoo name either."""
    found = {}
    for folder in ("tests", "benchmarks", "scripts"):
        for file in sorted((ROOT / folder).rglob("*.py")):
            found[f"{folder}.{file.stem}"] = (file, file.read_text(encoding="utf-8"))
    return found
