"""segdeploy list: the model zoo."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("list", help="list the registry models",
                            description="List every registry model with task, default input size and licence. "
                            "Nothing is cut at any terminal width: long lines wrap in the terminal.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Plain columns, each as wide as its longest cell; the last column is never padded or cut."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths)] + [str(row[-1])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def run(args) -> int:
    import json

    from segdeploy.core.registry import get_spec, list_models

    specs = [get_spec(name) for name in list_models()]
    if args.json:
        print(json.dumps([{"name": s.name, "title": s.title, "task": s.task, "input_size": s.input_size,
                           "license": s.license, "source": s.source,
                           "default_weights": s.default_weights} for s in specs], indent=2))
        return 0
    rows = [(s.name, s.task, "x".join(map(str, s.input_size)), str(s.num_classes), s.license.split(" ")[0],
             s.default_weights or "—", s.title) for s in specs]
    print(format_table(("name", "task", "input", "classes", "licence", "packaged weights", "model"), rows))
    return 0
