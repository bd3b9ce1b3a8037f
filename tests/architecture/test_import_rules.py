"""kzoo's import rules (tests/architecture/import_rules.py) hold over the whole tree, and the check
fails on a violation of each kind."""

import import_rules as rules


def test_the_tree_follows_the_rules():
    sources = rules.kzoo_sources()
    assert {"kzoo.models.albert", "kzoo.converters.convert", "kzoo.export.tflite", "kzoo.cli"} <= set(sources)
    assert rules.violations(sources) == []


def test_tests_benchmarks_and_scripts_use_no_private_kzoo_name():
    known = rules.kzoo_sources()
    assert rules.violations(rules.outside_sources(), known_modules=known) == []


def check(module, source, others=("kzoo.export.common", "kzoo.converters.readers", "kzoo.io.modeldir")):
    sources = {**{m: (f"{m}.py", "") for m in others}, module: (f"{module}.py", source)}
    return rules.violations(sources)


def test_a_core_module_importing_export_fails_also_inside_a_function():
    found = check("kzoo.models.albert", "def build():\n    from kzoo.export.common import ExportError\n")
    assert len(found) == 1 and "kzoo.models.albert (core) imports kzoo.export.common (export)" in found[0]
    assert found[0].startswith("kzoo.models.albert.py:2:")


def test_converters_and_export_must_not_import_each_other():
    assert check("kzoo.converters.convert", "import kzoo.export.common\n")
    assert check("kzoo.export.tflite", "from kzoo.converters import readers\n")
    assert check("kzoo.export.tflite", "from ..converters import readers\n")  # relative
    assert check("kzoo.io.modeldir", "import importlib\nimportlib.import_module('kzoo.converters.readers')\n")


def test_only_the_cli_imports_everything():
    assert check("kzoo.cli.commands", "from kzoo.converters import readers\nfrom kzoo.export import common\n") == []
    assert check("kzoo.runtime", "from kzoo.cli import main\n")
    assert check("kzoo.converters.convert", "from kzoo.cli.output import print_json\n")


def test_private_names_across_modules_fail():
    assert check("kzoo.pipelines.base", "from kzoo.io.modeldir import _secret\n")
    assert check("kzoo.pipelines.base", "from kzoo.io import modeldir\nmodeldir._secret()\n")
    assert check("kzoo.pipelines.base", "from kzoo.io import modeldir\nmodeldir.__name__\n") == []


def test_every_kzoo_import_resolves():
    """Each `from kzoo... import name` anywhere (benchmarks and scripts too, which no test runs) names
    something that exists."""
    import importlib

    known = rules.kzoo_sources()
    missing = []
    for module, (file, source) in {**known, **rules.outside_sources()}.items():
        for line, target, name, _ in rules.imports(module, source, str(file).endswith("__init__.py")):
            if rules.part(target) is None or target not in known:
                continue
            if name is not None and name != "*" and f"{target}.{name}" not in known:
                if not hasattr(importlib.import_module(target), name):
                    missing.append(f"{file}:{line}: {target}.{name}")
    assert missing == []


def test_io_importing_a_higher_layer_fails():
    found = check("kzoo.io.modeldir", "def load():\n    from kzoo.models import build_model\n",
                  others=("kzoo.models",))
    assert len(found) == 1 and "lowest layer" in found[0]
    assert check("kzoo.io.modeldir", "from kzoo.io import keras_internals\nfrom kzoo.errors import KzooError\n",
                 others=("kzoo.io.keras_internals", "kzoo.errors")) == []


def test_every_package_is_installed():
    """pyproject.toml lists every folder of the package (a missing one installs without it)."""
    import tomllib

    setuptools = tomllib.loads((rules.ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join([package, *init.parent.relative_to(folder).parts])
             for package, folder in rules.PACKAGES.items() for init in folder.rglob("__init__.py")}
    assert sorted(setuptools["packages"]) == sorted(found)
    assert setuptools["package-dir"] == {"kzoo": "kzoo", "kzoo.converters": "converters", "kzoo.export": "export"}


def test_the_cli_parser_and_the_declarations_import_no_tensorflow():
    """`kzoo --help` and every choice the parser shows read the declarations only: no TensorFlow,
    Keras or torch at import (they would print their start-up logs before kzoo can quiet them)."""
    import subprocess
    import sys

    code = ("import sys, kzoo.cli, kzoo.converters.albert, kzoo.converters.xlm, kzoo.converters.xlm_roberta\n"
            "kzoo.cli.build_parser()\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
