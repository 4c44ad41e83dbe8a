"""The import graph of mcp_llm: no cycle, and every arrow pointing down.

Read from the source with `ast`, so every import counts: at module level, inside functions (the
lazy imports that keep start-up fast), and under `TYPE_CHECKING`. A lazy or type-only import that
points up is still an arrow up: it is how the circle of eleven files (issue 19) hid.

The floors, top down:

    cli, server          the two surfaces (argparse; MCP wiring)
    tools                the four tool bodies, once
    app                  what the tools share: registry, router, model list, health cache
    router               one call end to end
    registry, vision, image_fit, images, zero_config, …
    adapters/            one provider's wire protocol each
    client_call, schema/, config, …
    errors, trace, words the ground floor
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mcp_llm"

# Each of these imports nothing from the modules listed against it (nor from anything those import).
TOP = ("mcp_llm.cli", "mcp_llm.server", "mcp_llm.__main__")
ABOVE = {
    "mcp_llm.tools": TOP,
    "mcp_llm.app": (*TOP, "mcp_llm.tools"),
    "mcp_llm.router": (*TOP, "mcp_llm.tools", "mcp_llm.app"),
}
LOWER_THAN_ROUTER = (*TOP, "mcp_llm.tools", "mcp_llm.app", "mcp_llm.router")
GROUND = ("mcp_llm.errors", "mcp_llm.trace", "mcp_llm.words")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The mcp_llm modules `name` imports anywhere in its source (a submodule when one is named)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {module for module in found if module in known and module != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def reachable(edges: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module `start` imports, directly or not, each with the module it was reached from."""
    via: dict[str, str] = {}
    stack = [start]
    while stack:
        current = stack.pop()
        for target in edges[current]:
            if target not in via:
                via[target] = current
                stack.append(target)
    return via


def path_to(via: dict[str, str], start: str, target: str) -> list[str]:
    chain = [target]
    while chain[-1] != start:
        chain.append(via[chain[-1]])
    return chain[::-1]


def test_the_graph_is_read_from_every_kind_of_import() -> None:
    """The reader itself: a lazy import, a TYPE_CHECKING one and a relative one are all arrows."""
    edges = graph()
    assert "mcp_llm.server" in edges["mcp_llm.cli"]  # lazy: inside `_serve`
    assert "mcp_llm.client_call" in edges["mcp_llm.adapters.base"]  # under TYPE_CHECKING
    assert "mcp_llm.schema.argument" in edges["mcp_llm.schema"]
    assert len(edges) > 40


def test_no_import_cycle() -> None:
    edges = graph()
    for name in sorted(edges):
        via = reachable(edges, name)
        if name in via:  # back at the start: the way there is a cycle
            cycle = [*path_to(via, name, via[name]), name]
            raise AssertionError("import cycle: " + " → ".join(cycle))


def test_lower_floors_import_nothing_above_them() -> None:
    edges = graph()
    lower = [name for name in edges if name.startswith(("mcp_llm.adapters", "mcp_llm.schema"))
             or name in (*GROUND, "mcp_llm.client_call", "mcp_llm.config")]
    assert "mcp_llm.adapters.sampling" in lower and "mcp_llm.schema.reply" in lower
    for name in lower:
        via = reachable(edges, name)
        for above in LOWER_THAN_ROUTER:
            assert above not in via, f"{name} reaches up to {above}: " + " → ".join(path_to(via, name, above))


def test_the_ground_floor_imports_nothing_of_ours() -> None:
    edges = graph()
    for name in GROUND:
        assert edges[name] == set(), f"{name} imports {sorted(edges[name])}"


def test_the_upper_floors_point_down() -> None:
    edges = graph()
    for name, forbidden in ABOVE.items():
        via = reachable(edges, name)
        for above in forbidden:
            assert above not in via, f"{name} reaches up to {above}: " + " → ".join(path_to(via, name, above))


def test_the_tool_bodies_are_written_once() -> None:
    """server.py and cli.py reach the router only through the tool service (tools.py)."""
    edges = graph()
    for surface in ("mcp_llm.server", "mcp_llm.cli"):
        assert "mcp_llm.router" not in edges[surface], f"{surface} imports the router itself"
        assert "mcp_llm.tools" in edges[surface]
