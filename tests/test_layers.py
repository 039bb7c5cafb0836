"""The package's layers, read from its import statements (every import, at module level or inside a
function): no import cycles, no upward imports, and the file readers and writers import no JAX.

The layers, lowest first: `errors`, `files`, `channels`; `image_io`; `models` (its `ops` first); `data`, `losses`,
`evaluation`, `checkpoint`, ...; `train`; `convert` (the torch side, at the edge: only the
converter's command imports it).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "dmvfn_jax"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The package module that `import name` loads last (`a.b.c` if it is a module, else `a.b`)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the package modules it imports}, e.g. 'dmvfn_jax.train.loop' -> {'dmvfn_jax.losses', ...}."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        targets = set()
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                # `from a.b import c` loads a.b.c when c is a module, else a.b
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for n in names:
                target = _resolve(n, modules)
                if target is not None and target != mod:
                    targets.add(target)
        graph[mod] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _in(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, targets in sorted(graph.items()):
        for t in sorted(targets):
            if _in(t, "dmvfn_jax.convert") and not _in(mod, "dmvfn_jax.convert"):
                bad.append(f"{mod} imports {t}: only the converter itself may use the torch side")
            if _in(mod, "dmvfn_jax.models") and not _in(t, "dmvfn_jax.models"):
                bad.append(f"{mod} imports {t}: model code imports only the models package (its ops among it)")
            if _in(mod, "dmvfn_jax.data") and _in(t, "dmvfn_jax.train", "dmvfn_jax.evaluation", "dmvfn_jax.checkpoint"):
                bad.append(f"{mod} imports {t}: data is below training, evaluation and checkpoints")
            if _in(mod, "dmvfn_jax.evaluation") and _in(t, "dmvfn_jax.train"):
                bad.append(f"{mod} imports {t}: evaluation is below training")
            if _in(mod, "dmvfn_jax.errors", "dmvfn_jax.files", "dmvfn_jax.image_io", "dmvfn_jax.data.resize") and \
                    not _in(t, "dmvfn_jax.errors", "dmvfn_jax.files"):
                bad.append(f"{mod} imports {t}: file reading and writing sit under everything else")
    return bad


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_upward_imports():
    assert violations(import_graph()) == []


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path):
    pkg = tmp_path / "dmvfn_jax"
    (pkg / "train").mkdir(parents=True)
    (pkg / "convert").mkdir()
    for f in ("__init__.py", "train/__init__.py", "convert/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "image_io.py").write_text("def f():\n    from dmvfn_jax.visualize import write_gif\n")
    (pkg / "visualize.py").write_text("from dmvfn_jax.image_io import import_cv2\n")
    (pkg / "train" / "loop.py").write_text("from dmvfn_jax.convert.api import load_vgg19\n")
    (pkg / "convert" / "api.py").write_text("")
    graph = import_graph(pkg)
    assert cycles(graph) == [["dmvfn_jax.image_io", "dmvfn_jax.visualize"]]
    assert any(v.startswith("dmvfn_jax.train.loop imports dmvfn_jax.convert.api") for v in violations(graph))
    assert any(v.startswith("dmvfn_jax.image_io imports dmvfn_jax.visualize") for v in violations(graph))


def test_reading_and_writing_files_imports_no_jax():
    """Reading a PNG, resizing a frame as the data scripts do and writing a file import none of
    JAX, Flax, orbax, TensorFlow, torch or OpenCV (input workers and dataset builders import these)."""
    code = ("import sys\n"
            "import dmvfn_jax.image_io, dmvfn_jax.files, dmvfn_jax.data.resize, dmvfn_jax.errors\n"
            "heavy = {'jax', 'flax', 'orbax', 'tensorflow', 'torch', 'cv2', 'tensorflow_datasets'}\n"
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout
