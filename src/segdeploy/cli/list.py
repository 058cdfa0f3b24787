"""segdeploy list: the model zoo."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("list", help="list the registry models",
                            description="List every registry model with task, default input size and licence.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json

    from segdeploy.core.registry import get_spec, list_models

    specs = [get_spec(name) for name in list_models()]
    if args.json:
        print(json.dumps([{"name": s.name, "title": s.title, "task": s.task, "input_size": s.input_size,
                           "license": s.license, "source": s.source} for s in specs], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="segdeploy model zoo")
    for column in ("name", "task", "input", "classes", "licence", "model"):
        table.add_column(column)
    for s in specs:
        table.add_row(s.name, s.task, "x".join(map(str, s.input_size)), str(s.num_classes),
                      s.license.split(" ")[0], s.title)
    Console().print(table)
    return 0
