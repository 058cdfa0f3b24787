"""Layout registry and the dataset flags shared by ``segdeploy eval`` / ``predict`` / ``run``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from segdeploy.data.base import DatasetError, Layout
from segdeploy.data.carvana import Carvana
from segdeploy.data.dsb2018 import DSB2018
from segdeploy.data.sod import SOD_LAYOUTS, Pairs
from segdeploy.data.voc import VOC2012

LAYOUTS: dict[str, type[Layout]] = {cls.name: cls for cls in (*SOD_LAYOUTS, Pairs, Carvana, DSB2018, VOC2012)}

#: Other spellings accepted by get_layout (after lower-casing and '_' → '-').
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "duts": ("duts-te", {}),
    "dutste": ("duts-te", {}),
    "msrab": ("msra-b", {}),
    "hkuis": ("hku-is", {}),
    "pascals": ("pascal-s", {}),
    "dutomron": ("dut-omron", {}),
    "voc": ("voc2012", {}),
    "pascal-voc": ("voc2012", {}),
    "dsb2018-96": ("dsb2018", {"variant": "prepared"}),
    "dsb2018-raw": ("dsb2018", {"variant": "raw"}),
    "dsb": ("dsb2018", {}),
}


def _resolve(name: str) -> tuple[type[Layout], dict[str, Any]]:
    key = name.strip().lower().replace("_", "-")
    if key in LAYOUTS:
        return LAYOUTS[key], {}
    if key in ALIASES:
        target, preset = ALIASES[key]
        return LAYOUTS[target], dict(preset)
    raise DatasetError(f"unknown dataset layout {name!r}; known: {', '.join(list_layouts())}")


def get_layout_class(name: str) -> type[Layout]:
    """The Layout class registered under ``name`` (aliases accepted)."""
    return _resolve(name)[0]


def get_layout(name: str, root: str | os.PathLike | None, **opts: Any) -> Layout:
    """Scan ``root`` with the layout called ``name``; see :meth:`Layout.from_root` for ``opts``.

    Example:
        >>> layout = get_layout("ecssd", "/data/ECSSD", limit=10)  # doctest: +SKIP
        >>> image, mask = layout.load(layout[0])                     # doctest: +SKIP
    """
    cls, preset = _resolve(name)
    return cls.from_root(root, **{**preset, **opts})


def list_layouts() -> list[str]:
    """Registered layout names, sorted."""
    return sorted(LAYOUTS)


def layout_descriptions() -> dict[str, str]:
    """name → one-line description (folders expected), for ``--help`` and ``segdeploy list``."""
    return {name: LAYOUTS[name].description for name in list_layouts()}


# ---------------------------------------------------------------------- CLI flags
def add_dataset_arguments(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """Add the dataset flags: --dataset, --data-root, --images, --masks, --split, --split-file,
    --limit, --skip-unmatched, --dataset-opt KEY=VALUE."""
    group = parser.add_argument_group("dataset")
    group.add_argument("--dataset", required=required, metavar="LAYOUT",
                       help=f"dataset layout: {', '.join(list_layouts())}")
    group.add_argument("--data-root", metavar="DIR", help="dataset folder (see the layout's expected structure)")
    group.add_argument("--images", metavar="DIR", help="image folder (pairs layout, or to override a layout's search)")
    group.add_argument("--masks", metavar="DIR", help="ground-truth folder (pairs layout, or override)")
    group.add_argument("--split", metavar="NAME", help="split: carvana all|train|val, dsb2018 val|train|all, voc2012 val|train|trainval")
    group.add_argument("--split-file", metavar="LIST", help="text file of ids to use (one per line), in that order")
    group.add_argument("--limit", type=int, metavar="N", help="use only the first N samples")
    group.add_argument("--skip-unmatched", action="store_true",
                       help="skip images without mask / masks without image instead of failing (they are listed in the results)")
    group.add_argument("--dataset-opt", action="append", default=[], metavar="KEY=VALUE",
                       help="layout option, e.g. val_percent=0.1, seed=0, order=listdir, variant=prepared, mask_dir=SegmentationClassAug")


def parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return text


def layout_from_args(args: argparse.Namespace, *, require_masks: bool = True) -> Layout:
    """Build the layout the flags of :func:`add_dataset_arguments` describe.

    Raises:
        DatasetError: unknown layout, bad option or broken dataset (message says what to fix).
    """
    name = args.dataset or ("pairs" if args.images and args.masks else None)
    if name is None:
        raise DatasetError("no dataset given: pass --dataset LAYOUT --data-root DIR (or --images DIR --masks DIR)")
    cls, preset = _resolve(name)
    opts: dict[str, Any] = dict(preset)
    for item in args.dataset_opt or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DatasetError(f"--dataset-opt expects KEY=VALUE, got {item!r}")
        opts[key.strip().replace("-", "_")] = parse_value(value.strip())
    if args.images:
        opts["images"] = args.images
    if args.masks:
        opts["masks"] = args.masks
    if args.split:
        if "split" not in cls.options:
            raise DatasetError(f"{cls.name} has no --split option (use --split-file LIST to choose ids)")
        opts["split"] = args.split
    return cls.from_root(
        args.data_root,
        split_file=args.split_file,
        limit=args.limit,
        strict=not args.skip_unmatched,
        require_masks=require_masks,
        **opts,
    )
