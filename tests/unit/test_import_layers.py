"""The import graph keeps the architecture docs/architecture.md draws: no circle, no upward arrow.

Read from the source with `ast` (nothing is imported): every import counts, at the top of a
module, inside a function (a lazy import) or under `if TYPE_CHECKING:`, because each is a
dependency a maintainer has to hold in mind. `from package import name` counts as an
import of package.name when that is a module, else of the package (as import-linter reads
it); importing a module does not count as importing the packages above it.

The layers, bottom first; a module imports its own layer and those below, never one above,
and the two halves of a layer never import each other:

    cli / ui                           cortexd.cli, cortexd.__main__, cortexd.ui, cortexd.launch,
                                       cortexd.control_client, cortexd.predict_request
    daemon | kube                      cortexd.daemon | cortexd.kube
    backends | gateway | console       cortexd.backends | cortexd.gateway | cortexd.console
    core, spec and shared values       cortexd.core, cortexd.spec, cortexd.status, cortexd.settings, ...

predictor_runtime never imports cortexd (cortexd may import predictor_runtime).
A new module of cortexd must be placed in a layer below before the test passes.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cortexd", "predictor_runtime")

# (level, side): a module may import modules of a lower level, or of its own level and side
LAYERS: dict[str, tuple[int, str]] = {
    "cortexd": (0, ""),  # the package itself: its version
    "cortexd.core": (0, ""),
    "cortexd.spec": (0, ""),
    "cortexd.errors": (0, ""),
    "cortexd.credentials": (0, ""),
    "cortexd.procfs": (0, ""),
    "cortexd.home": (0, ""),
    "cortexd.logfiles": (0, ""),
    "cortexd.project_files": (0, ""),
    "cortexd.job_sources": (0, ""),
    "cortexd.nvml": (0, ""),
    "cortexd.dataclass_json": (0, ""),
    "cortexd.settings": (0, ""),
    "cortexd.status": (0, ""),
    "cortexd.history": (0, ""),
    "cortexd.backends": (1, "backends"),
    "cortexd.gateway": (1, "gateway"),
    "cortexd.console": (1, "console"),
    "cortexd.daemon": (2, "daemon"),
    "cortexd.kube": (2, "kube"),
    "cortexd.cli": (3, ""),
    "cortexd.__main__": (3, ""),
    "cortexd.ui": (3, ""),
    "cortexd.launch": (3, ""),
    "cortexd.control_client": (3, ""),
    "cortexd.predict_request": (3, ""),
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that module `name` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                out.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def layer(module: str) -> tuple[int, str] | None:
    while module:
        if module in LAYERS:
            return LAYERS[module]
        module = module.rpartition(".")[0]
    return None


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_back_through_others():
    edges = graph()
    found = circles(edges)
    described = []
    for component in found:
        inside = set(component)
        arrows = [f"{a} -> {b}" for a in component for b in sorted(edges[a] & inside)]
        described.append(f"{', '.join(component)}: {'; '.join(arrows)}")
    assert not found, "import circles:\n  " + "\n  ".join(described)


def test_every_module_of_cortexd_has_a_layer():
    unplaced = sorted(m for m in modules() if m.startswith("cortexd") and layer(m) is None)
    assert not unplaced, f"place these in LAYERS (tests/unit/test_import_layers.py): {unplaced}"


def test_no_arrow_points_up_or_across_a_layer():
    wrong = []
    for source, targets in sorted(graph().items()):
        if not source.startswith("cortexd"):
            continue
        mine = layer(source)
        for target in sorted(targets):
            theirs = layer(target) if target.startswith("cortexd") else None
            if mine is None or theirs is None:
                continue
            if theirs[0] > mine[0] or (theirs[0] == mine[0] and theirs[1] != mine[1]):
                wrong.append(f"{source} -> {target}")
    assert not wrong, "imports against the layers (docs/architecture.md):\n  " + "\n  ".join(wrong)


def test_the_runtime_never_imports_cortexd():
    wrong = [f"{source} -> {target}" for source, targets in sorted(graph().items())
             if source.startswith("predictor_runtime") for target in sorted(targets) if target.startswith("cortexd")]
    assert not wrong, "predictor_runtime must run without cortexd:\n  " + "\n  ".join(wrong)


def test_the_graph_reader_sees_lazy_and_type_checking_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cortexd.status import Status\n"
                      "def f():\n    import cortexd.daemon.running\n    from cortexd.spec import units\n")
    known = modules()
    assert imports("cortexd.m", module, known) == {"cortexd.status", "cortexd.daemon.running", "cortexd.spec.units"}
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
