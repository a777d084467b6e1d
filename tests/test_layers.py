"""The package's layers import only downwards (docs/design.md, "Layers").

Every import inside escalation_sim, module-level or inside a function, is resolved to the
module it names; a module may import from its own layer and the layers below it, never above.
"""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "escalation_sim"

# lowest first; a module's layer is the first prefix that matches its dotted name
LAYERS = [
    ("core", ["escalation_sim._version", "escalation_sim.types", "escalation_sim.outcomes",
              "escalation_sim.randomness", "escalation_sim.grades"]),
    ("designs", ["escalation_sim.designs"]),
    ("inputs", ["escalation_sim.inputs"]),
    ("results", ["escalation_sim.results"]),
    ("engines", ["escalation_sim.engines"]),
    ("run", ["escalation_sim.run"]),
    ("outputs", ["escalation_sim.plotting", "escalation_sim.report"]),
    ("front", ["escalation_sim.api", "escalation_sim.cli", "escalation_sim.__main__",
               "escalation_sim"]),
]
# third-party packages a layer must not import (designs stay pure decision rules)
FORBIDDEN = {"designs": {"simpy", "joblib", "pandas", "matplotlib", "dask"},
             "engines": {"matplotlib", "joblib", "dask"},
             "results": {"simpy", "joblib", "dask", "matplotlib"}}


def layer_of(mod: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if mod == p or mod.startswith(p + "."):
                return i
    raise AssertionError(f"{mod} belongs to no layer: add it to LAYERS and docs/design.md")


def modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield ".".join(parts), is_pkg, path


def imports(mod: str, is_pkg: bool, path: Path):
    pkg = mod if is_pkg else mod.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield node.lineno, target
            for a in node.names:  # "from . import plotting" names a module
                cand = f"{target}.{a.name}"
                if (PKG.parent / (cand.replace(".", "/") + ".py")).exists() or \
                        (PKG.parent / cand.replace(".", "/")).is_dir():
                    yield node.lineno, cand


ALL = list(modules())


@pytest.mark.parametrize("mod,is_pkg,path", ALL, ids=[m for m, _, _ in ALL])
def test_imports_point_down(mod, is_pkg, path):
    me = layer_of(mod)
    bad = []
    for line, target in imports(mod, is_pkg, path):
        top = target.split(".")[0]
        if top == "escalation_sim":
            if target == "escalation_sim" and mod != "escalation_sim":
                bad.append(f"line {line}: imports the package top ({target})")
            elif layer_of(target) > me:
                bad.append(f"line {line}: {LAYERS[me][0]} imports {LAYERS[layer_of(target)][0]}"
                           f" ({target})")
        elif top in FORBIDDEN.get(LAYERS[me][0], ()):
            bad.append(f"line {line}: {LAYERS[me][0]} must not import {top}")
    assert not bad, f"{mod}:\n" + "\n".join(bad)


def test_design_doc_lists_every_layer():
    doc = (PKG.parent / "docs" / "design.md").read_text()
    for name, prefixes in LAYERS:
        assert f"**{name}**" in doc, name
