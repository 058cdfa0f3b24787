"""segdeploy info MODEL: everything the registry knows about one model."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("info", help="show a model's source, preprocessing, decoding and weights",
                            description="Show where a model comes from, how its input is prepared, how its "
                            "output is decoded, which checkpoint file it loads and what it is known to score. "
                            "Values (URLs included) are printed whole, never cut to the terminal width.")
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def spec_dict(spec) -> dict:
    data = spec.to_dict()
    data.pop("builder_kwargs", None)
    return data


def rows_of(spec, data: dict) -> list[tuple[str, str]]:
    """(field, value) pairs shown by ``info``."""
    w = spec.official
    rows = [
        ("name", spec.name), ("title", spec.title), ("task", f"{spec.task} ({spec.num_classes} classes)"),
        ("source", spec.source), ("licence", spec.license),
        ("default input", "x".join(map(str, spec.input_size))),
        ("max input side", str(spec.max_input_side) if spec.max_input_side else "— (fixed-size input or no limit)"),
        ("preprocess", ", ".join(f"{k}={v}" for k, v in data["preprocess"].items() if v not in (None, 1, 1.0))),
        ("decode", ", ".join(f"{k}={v}" for k, v in data["decode"].items() if v is not None)),
        ("outputs", ", ".join(spec.output_names)),
        ("packaged weights", spec.default_weights or "— (pass --weights FILE)"),
        ("checkpoint", w.file_name or "—"), ("link", w.url or "—"), ("how to get", w.how_to_get or "—"),
        ("published", "; ".join(p.describe() for p in w.published) or "—"),
    ]
    if spec.notes:
        rows.append(("notes", spec.notes))
    return rows


def run(args) -> int:
    import json

    from segdeploy.core.registry import get_spec

    spec = get_spec(args.model)
    data = spec_dict(spec)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows = rows_of(spec, data)
    width = max(len(key) for key, _ in rows)
    # Plain lines: a value longer than the terminal wraps there instead of being cut with "…".
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return 0
