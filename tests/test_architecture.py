"""The package's shape: its import graph (every `import` / `from ... import`, function-local ones included, read
with `ast`) has no cycle, and the student's modelling code never reaches the teacher's."""

import ast
from pathlib import Path

import smt_hf

PACKAGE_DIR = Path(smt_hf.__file__).resolve().parent
# Cycles known today, each to be removed by the change that breaks it (empty = none allowed).
KNOWN_CYCLES: set[frozenset[str]] = set()


def _module_names() -> dict[str, tuple[Path, bool]]:
    names = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        names[".".join(parts)] = (path, is_pkg)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports explicitly (anywhere in the file). `from pkg import name` counts as
    importing `pkg.name` when that is a module, else `pkg`; a parent package run implicitly is not an edge."""
    modules = _module_names()
    graph = {}
    for name, (path, is_pkg) in modules.items():
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add(sub if sub in modules else target)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), set()

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.add(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"smt_hf.modeling_recurrent", "smt_hf.trainer", "smt_hf.data.collator"} <= set(graph)
    assert find_cycles(graph) <= KNOWN_CYCLES, "import cycle(s) in smt_hf"


def test_find_cycles_sees_function_local_imports():
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == {frozenset({"a", "b"})}
    assert find_cycles({"a": {"b"}, "b": set()}) == set()


def test_student_modelling_does_not_import_the_teacher():
    graph = import_graph()
    for student_module in ("smt_hf.modeling_recurrent", "smt_hf.modeling_prefill"):
        assert "smt_hf.modeling_teacher" not in reachable(graph, student_module)


def _run(code: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_core_never_imports_matplotlib_viz_or_hardware():
    """Every module of the package except the plots (`viz`) and machine probing (`hardware`), imported in a fresh
    interpreter, pulls in neither matplotlib nor those two modules."""
    core = sorted(m for m in import_graph() if m not in ("smt_hf.viz", "smt_hf.hardware"))
    code = ("import importlib, sys\n"
            f"for m in {core!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib' or m in ('smt_hf.viz', 'smt_hf.hardware')))")
    out = _run(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_plots_without_matplotlib_name_the_install_command():
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from smt_hf.viz import plot_curves\n"
            "try:\n    plot_curves([0, 1], {'a': [1.0, 2.0]}, 'x.png')\nexcept ImportError as e:\n    print(e)")
    out = _run(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pip install 'smt-hf[plots]'" in out.stdout


def test_hub_package_is_layered_card_push_export():
    """Hub export, cards and upload live in `smt_hf.hub`, imported one way: card <- push <- export."""
    graph = import_graph()
    hub = {m for m in graph if m.startswith("smt_hf.hub.")}
    assert hub == {"smt_hf.hub.card", "smt_hf.hub.push", "smt_hf.hub.export"}
    assert graph["smt_hf.hub.card"] & hub == set()
    assert graph["smt_hf.hub.push"] & hub == {"smt_hf.hub.card"}
    assert graph["smt_hf.hub.export"] & hub == {"smt_hf.hub.card", "smt_hf.hub.push"}
    assert "smt_hf.trainer" not in reachable(graph, "smt_hf.hub")


def test_old_hub_and_export_import_paths_still_work():
    import smt_hf.export
    import smt_hf.hub
    import smt_hf.hub.export

    assert smt_hf.export is smt_hf.hub.export  # the same module: attributes set on one are seen by the other
    for name in ("export_for_hub", "ExportedFolder", "collect_code", "flatten_source", "flat_module_name",
                 "load_model", "model_folder", "main", "make_model_card", "model_kind", "push_folder", "MODEL_KINDS"):
        assert hasattr(smt_hf.export, name), name
    for name in ("make_model_card", "eval_results", "push_folder", "model_kind", "TEMPLATE_PATH", "METRIC_NAMES",
                 "MODEL_KINDS", "_version"):
        assert hasattr(smt_hf.hub, name), name
    assert smt_hf.hub.TEMPLATE_PATH.is_file() and smt_hf.export.PACKAGE_DIR == PACKAGE_DIR
    assert smt_hf.export_for_hub is smt_hf.hub.export_for_hub and smt_hf.load_model is smt_hf.hub.load_model
    out = _run("import sys; sys.argv = ['smt-export', '--help']; import runpy; runpy.run_module('smt_hf.export', run_name='__main__')")
    assert out.returncode == 0 and "usage: smt-export" in out.stdout, out.stderr[-2000:]


def test_student_transition_is_written_once():
    """`rmsnorm(updater(m, e))` is spelled in one function (`backbones.transition`); the model's `_step` and the
    compiled step of `fast.py` call it."""
    def calls_updater(node):
        return isinstance(node, ast.Call) and "updater" in ast.unparse(node.func)

    spelled = []
    for path in PACKAGE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and ast.unparse(node.func) == "rms_normalize"
                    and node.args and calls_updater(node.args[0])):
                spelled.append(path.relative_to(PACKAGE_DIR).as_posix())
    assert spelled == ["backbones/__init__.py"]
