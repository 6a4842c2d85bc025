"""The package's import graph points down its layers only: no module imports one of a layer above it, and no
import cycle (read from the source, nothing imported)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ddpm_signrelu"
# Bottom first; a module may import its own layer's modules and those of the layers below.
LAYERS = [{"", "errors", "seeding", "images"}, {"diffusion"}, {"nn"}, {"data"}, {"metrics"}, {"lit"},
          {"callbacks", "checkpoints"}, {"runs"}, {"cli"}]


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("ddpm_signrelu", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        graph[name] = {node.module for node in ast.walk(ast.parse(path.read_text()))
                       if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ddpm_signrelu")}
    return graph


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_modules_import_only_their_layer_or_below():
    graph = import_graph()
    upward = [(a, b) for a, deps in graph.items() for b in deps if layer(b) > layer(a)]
    assert not upward, upward


def test_no_import_cycle():
    graph, done = import_graph(), set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module not in done:
            for dep in graph.get(module, ()):
                visit(dep, (*path, module))
            done.add(module)

    for module in graph:
        visit(module, ())
