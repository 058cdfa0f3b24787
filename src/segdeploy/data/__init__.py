"""Dataset readers: each public dataset's folder layout, scanned, paired and decoded.

>>> from segdeploy.data import get_layout
>>> layout = get_layout("carvana", "/data/carvana", split="val")        # doctest: +SKIP
>>> for sample in layout:                                                 # doctest: +SKIP
...     image, mask = layout.load(sample)   # HxWx3 uint8 RGB, HxW uint8

Layouts: salient-object sets (ecssd, duts-te, duts-tr, msra-b, msra10k, hku-is, pascal-s,
dut-omron, pairs), carvana, dsb2018 (raw or prepared 96x96) and voc2012. A root that does not match
raises :class:`DatasetError` naming what was expected and what was found.
"""

from segdeploy.data.base import DatasetError, Layout, Sample
from segdeploy.data.carvana import Carvana
from segdeploy.data.dsb2018 import DSB2018, PrepareReport, prepare_dsb2018
from segdeploy.data.id_lists import read_id_list
from segdeploy.data.registry import (
    LAYOUTS,
    add_dataset_arguments,
    get_layout,
    get_layout_class,
    layout_descriptions,
    layout_from_args,
    list_layouts,
)
from segdeploy.data.sod import Pairs, SODLayout
from segdeploy.data.voc import VOC2012

__all__ = [
    "LAYOUTS",
    "DSB2018",
    "VOC2012",
    "Carvana",
    "DatasetError",
    "Layout",
    "Pairs",
    "PrepareReport",
    "SODLayout",
    "Sample",
    "add_dataset_arguments",
    "get_layout",
    "get_layout_class",
    "layout_descriptions",
    "layout_from_args",
    "list_layouts",
    "prepare_dsb2018",
    "read_id_list",
]
