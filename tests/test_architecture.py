"""The layering of docs/design.md, checked on the source: no import cycles, no layer reaching into
another layer's private names, and a core (functional, methods, engine, renderers, checks) that runs
without Lightning."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lightning_xai"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(importer: str, is_package: bool, level: int, module: str) -> str:
    if level == 0:
        return module
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(name: str, path: Path, modules: Dict[str, Path]) -> List[Tuple[str, List[str]]]:
    """``[(imported module, [names taken from it])]`` of every import statement, at any depth."""
    tree = ast.parse(path.read_text())
    out: List[Tuple[str, List[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(name, path.name == "__init__.py", node.level, node.module or "")
            if not target.startswith("lightning_xai"):
                continue
            names = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:  # ``from . import functional``: the submodule itself
                    out.append((sub, []))
                else:
                    names.append(alias.name)
            if names:
                out.append((target, names))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names if a.name.startswith("lightning_xai"))
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ("callbacks", "functional"):
        return parts[1]
    return parts[1] if len(parts) > 1 else "lightning_xai"


def test_no_import_cycles() -> None:
    modules = _modules()
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target, _ in _imports(name, path, modules):
            if target not in modules or name.startswith(target + ".") or target == name:
                continue  # a submodule importing its own package (``from . import x``) is how packages work
            edges.add(target)
        graph[name] = edges
    cycles: List[List[str]] = []
    state: Dict[str, int] = {}

    def visit(node: str, stack: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles}"


def test_no_layer_imports_another_layers_private_names() -> None:
    modules = _modules()
    offences = []
    for name, path in modules.items():
        for target, names in _imports(name, path, modules):
            if _layer(target) == _layer(name):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                offences.append(f"{name} imports {', '.join(private)} from {target}")
        # ``module._name`` attribute access on an imported lightning_xai module of another layer
        aliases: Dict[str, str] = {}
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(name, path.name == "__init__.py", node.level, node.module or "")
                for a in node.names:
                    if f"{target}.{a.name}" in modules:
                        aliases[a.asname or a.name] = f"{target}.{a.name}"
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")
                and _layer(aliases[node.value.id]) != _layer(name)
            ):
                offences.append(f"{name} uses {node.value.id}.{node.attr} ({aliases[node.value.id]})")
    assert not offences, "\n".join(offences)


def test_checks_never_name_callback_classes() -> None:
    """Checks find the values they read by the metric keys monitors declare, not by class names."""
    source = (PACKAGE / "checks.py").read_text()
    tree = ast.parse(source)
    compared = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Compare) and any(isinstance(c, ast.Constant) and str(c.value).endswith("Monitor")
                                                  for c in [node.left, *node.comparators])
    ]
    assert not compared
    assert "type(cb).__name__ for cb" not in source
    assert "from .callbacks" not in source and "import callbacks" not in source


def test_the_core_runs_without_lightning() -> None:
    code = (
        "import sys\n"
        "for name in ('pytorch_lightning', 'lightning', 'lightning.pytorch', 'tensorboard'):\n"
        "    sys.modules[name] = None\n"
        "import torch\n"
        "from lightning_xai import ProbeSet, functional as F, checks, engine, renderers, drift_reference\n"
        "net = torch.nn.Sequential(torch.nn.Linear(4, 3))\n"
        "probe = ProbeSet(torch.randn(5, 4), targets=torch.tensor([0, 1, 2, 0, 1]))\n"
        "maps = engine.AttributionEngine().attributions(net, probe, F.resolve_methods(['saliency', 'occlusion']))\n"
        "print(sorted(maps), renderers.renderer_for(probe).render(maps['saliency'],"
        " renderers.RenderContext(probe=probe, method='saliency')).shape[2],"
        " checks.run([checks.Finite()], net, probe)[0].passed)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["['occlusion',", "'saliency']", "3", "True"]
