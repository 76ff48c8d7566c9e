"""The package's floors: a module imports only from its own floor or lower ones (docs/design.md, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import mora_agents

PACKAGE = Path(mora_agents.__file__).parent
FLOORS = [
    ("__main__", "cli"),
    ("ui", "serve", "mcp_server", "bench"),
    ("runs", "batch", "data"),
    ("agents",),
    ("sop", "train"),
    ("tools", "pipelines", "judges"),
    ("models", "llm", "media", "inputs", "eval"),
    ("settings", "errors", "jsonl", "console", "lazy"),
]
FLOOR = {part: level for level, parts in enumerate(FLOORS) for part in parts}


def _part(module: str) -> str:
    """The top-level part of a mora_agents module name: 'tools' for mora_agents.tools.image."""
    return module.split(".")[1] if "." in module else ""


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, part) of every `mora_agents...` import in a file, at module level or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mora_agents."):
            found.append((node.lineno, _part(node.module)))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, _part(a.name)) for a in node.names if a.name.startswith("mora_agents.")]
    return found


def test_every_part_has_a_floor():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert parts <= FLOOR.keys(), f"parts without a floor: {sorted(parts - FLOOR.keys())}"


def test_no_module_imports_a_higher_floor():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":
            continue
        own = FLOOR[_part(".".join(("mora_agents", *path.relative_to(PACKAGE).with_suffix("").parts)))]
        for line, part in imports(path):
            if FLOOR[part] < own:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {part} (floor {FLOOR[part]} "
                                  f"above its own {own})")
    assert not violations, "\n".join(violations)
