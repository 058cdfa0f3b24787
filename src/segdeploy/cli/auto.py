"""segdeploy auto: the full ``--backend auto`` probe, on request, cached for every later command."""

from __future__ import annotations

from segdeploy.cli.common import device_name, model_argument, weights_argument

DESCRIPTION = """\
Measure every way of running MODEL here and remember the fastest faithful one.

Without this command, `--backend auto` (predict, serve, eval, run, demo, the Python API) makes a
quick first choice in seconds on an empty cache: a packaged int8 model when segdeploy ships one for
these weights and it passes the fidelity gate here, else fp32 on the fastest engine installed.
`segdeploy auto MODEL` runs the full probe instead: every backend x precision that can run on the
device (int8 calibrated on generated images: minutes on a small CPU), each judged against PyTorch
fp32 and timed; the fastest that passes replaces the cached choice, which every command then uses.

The cache (<cache>/auto/, $SEGDEPLOY_CACHE or ~/.cache/segdeploy) records each choice with a
digest of its content and of the artifact it names; one that does not verify is chosen again.

Exit code: 0 when a configuration passed (the table is printed), 3 when none did.
"""


def register(sub) -> None:
    import argparse

    parser = sub.add_parser("auto", help="measure every backend x precision here; cache the fastest faithful one "
                            "(what --backend auto uses)", description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    model_argument(parser)
    weights_argument(parser)
    parser.add_argument("--device", default="cpu", type=device_name, help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--precision", default=None, choices=("fp32", "fp16", "bf16", "int8"),
                        help="probe only this precision (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="make only the quick first choice (what other commands do on an empty cache)")
    parser.add_argument("--show", action="store_true", help="print the cached choice without measuring")
    parser.add_argument("--json", metavar="PATH", help="write the choice (with its table) as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json
    import sys

    from segdeploy.backends import _auto_progress
    from segdeploy.backends.auto import cache_path_for, probe_key
    from segdeploy.backends.auto_cache import load_choice
    from segdeploy.backends.auto_probe import _weights_id, choose_auto, table_lines
    from segdeploy.core.registry import get_spec
    from segdeploy.engine.writers import atomic_write_text
    from segdeploy.zoo import create_model

    spec = get_spec(args.model)
    module = create_model(spec, args.weights, seed=args.seed)
    if args.show:
        key = probe_key(spec, _weights_id(module), args.device, args.precision)
        choice, problem = load_choice(cache_path_for(key), key)
        if choice is None:
            print(f"{spec.name}: no cached choice that verifies" + (f" ({problem})" if problem else "")
                  + f"; `segdeploy auto {spec.name}` makes one", file=sys.stderr)
            return 0
    else:
        import os

        os.environ["SEGDEPLOY_AUTO_PROBE"] = "1"  # asked for: probe even where tests turn it off
        choice = choose_auto(module, spec, args.device, args.precision, seed=args.seed, refresh=not args.quick,
                             progress=_auto_progress, full=not args.quick)
    for line in table_lines(choice):
        print(line)
    print(f"auto → {choice.backend} {choice.precision}"
          + (f" ({choice.quantizer})" if choice.quantizer else "") + f": {choice.why}")
    if choice.cache_path:
        print(f"cached: {choice.cache_path}")
    if args.json:
        atomic_write_text(args.json, json.dumps(choice.to_dict(), indent=2, default=str) + "\n")
    no_pass = choice.source == "static" and bool(choice.table)  # the probe ran and nothing passed
    return 3 if no_pass else 0
