"""``segdeploy prepare DATASET``: turn a raw download into the layout a seed guide evaluates on.

Only ``dsb2018`` needs it: 4uiiurz1/pytorch-nested-unet trains and validates UNet++ on images and
masks resized to 96x96 beforehand (``preprocess_dsb2018.py``), and seed guide 002's IoU is on that
prepared data. Heavy modules (cv2, the data package) are imported inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys

from segdeploy.cli.common import count, make_console


def register(subparsers) -> None:
    """Add ``prepare`` (with the ``dsb2018`` sub-command) to the CLI's sub-parsers."""
    parser = subparsers.add_parser(
        "prepare",
        help="convert a raw dataset download into the layout its seed guide evaluates on",
        description="Convert a raw dataset download into the layout its seed guide evaluates on.",
    )
    datasets = parser.add_subparsers(dest="prepare_dataset", metavar="DATASET", required=True)
    dsb = datasets.add_parser(
        "dsb2018",
        help="2018 Data Science Bowl stage1_train -> images/ + masks/0/ at 96x96 + val_ids.txt",
        description=(
            "Write the dsb2018_96 layout of 4uiiurz1/pytorch-nested-unet (preprocess_dsb2018.py): "
            "OUT/images/<id>.png (cv2.resize to SIZE x SIZE), OUT/masks/0/<id>.png (union of the instance masks "
            "> 127, resized, x255), OUT/val_ids.txt (train_test_split(ids, test_size=0.2, random_state=41)) and "
            "OUT/prepare.json. Safe to re-run: existing outputs are kept and a complete folder is left untouched."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    dsb.add_argument("--data-root", required=True, metavar="RAW",
                     help="folder holding stage1_train/ (or stage1_train/ itself)")
    dsb.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created if needed)")
    dsb.add_argument("--size", type=count(1), default=96, help="output side length in pixels")
    dsb.add_argument("--split-order", choices=("sorted", "listdir"), default="sorted",
                     help="id order the upstream train_test_split is applied to (upstream used its glob order, "
                          "which depends on the file system; sorted is reproducible)")
    dsb.add_argument("--force", action="store_true", help="recompute and rewrite every sample")
    dsb.add_argument("--workers", type=count(1), default=None, help="threads (default: up to 8, one per core)")
    dsb.set_defaults(func=run)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``segdeploy prepare``; returns the exit code (0 ok, 2 bad input)."""

    from segdeploy.data import DatasetError, prepare_dsb2018

    console = make_console(stderr=True)
    if getattr(args, "prepare_dataset", None) != "dsb2018":
        console.print("[red]error:[/red] choose a dataset to prepare: dsb2018")
        return 2
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # The bar starts with the first finished sample, so a scan error prints on a clean line.
    bar: dict = {}

    def advance(done: int, total: int) -> None:
        if not bar:
            bar["progress"] = Progress(
                TextColumn("preparing dsb2018"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=console, transient=True,
            )
            bar["progress"].start()
            bar["task"] = bar["progress"].add_task("prepare", total=total)
        bar["progress"].update(bar["task"], completed=done, total=total)

    try:
        report = prepare_dsb2018(
            args.data_root, args.output, size=args.size, force=args.force,
            order=args.split_order, workers=args.workers, progress=advance,
        )
    except DatasetError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    finally:
        if bar:
            bar["progress"].stop()
    out = sys.stdout
    if not report.wrote_anything:
        print(
            f"{report.out_root}: already up to date ({report.total} samples, {report.num_val} validation ids); "
            "nothing written.",
            file=out,
        )
        return 0
    print(
        f"{report.out_root}: wrote {len(report.written)} of {report.total} samples "
        f"({len(report.unchanged)} already present); val_ids.txt ({report.num_val} ids) "
        f"{'written' if report.val_ids_written else 'unchanged'}; prepare.json "
        f"{'written' if report.manifest_written else 'unchanged'}.",
        file=out,
    )
    return 0
