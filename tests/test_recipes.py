"""Recipes as data: every recipe names real models and layouts, and every published number is the seeds'."""

import re
from pathlib import Path

import pytest

from segdeploy.data import list_layouts
from segdeploy.recipes.catalog import RECIPES, get_recipe, list_recipes
from segdeploy.recipes.options import RunRequest, resolve_options
from segdeploy.core.registry import get_spec, list_models

SHARED = Path("/work/shared")


def test_the_five_seed_guides_are_recipes():
    assert list_recipes() == ["u2net-ecssd", "unet-carvana", "unetpp-bigmb", "unetpp-dsb2018", "wseg-voc"]


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_fields_refer_to_real_things(name):
    recipe = RECIPES[name]
    for model in recipe.allowed_models():
        assert model in list_models()
    if recipe.dataset is not None:
        assert set(recipe.allowed_datasets()) <= set(list_layouts())
    assert recipe.headline == recipe.metrics[0]
    assert recipe.batch_sizes and min(recipe.batch_sizes) >= 1
    assert recipe.cpu_batch_sizes and set(recipe.cpu_batch_sizes) <= set(recipe.batch_sizes) | {1}
    multiple = get_spec(recipe.model).preprocess.multiple_of
    assert recipe.input_size[0] % multiple == 0 and recipe.input_size[1] % multiple == 0
    kinds = {row.kind for row in recipe.published}
    assert kinds == {"accuracy", "throughput"}
    for row in recipe.published:
        assert row.hardware and row.source
        if row.kind == "throughput":
            assert row.metric == "images_per_s" and row.batch_size >= 1 and row.value > 0
        else:
            assert row.comparable is False or row.metric in recipe.metrics
            assert row.model in (None, *recipe.allowed_models())
    assert recipe.to_dict()["published"][0]["value"] == recipe.published[0].value


def test_guide_throughput_rows_agree_with_performance_md_summary():
    """docs/performance.md §1 summarises the seeds; the recipes must carry the same Ascend figures."""
    u2 = {r.batch_size: r.value for r in RECIPES["u2net-ecssd"].published
          if r.kind == "throughput" and r.hardware == "Ascend 310P"}
    assert [round(u2[b], 1) for b in (1, 4, 8, 16, 32, 64)] == [241.0, 208.3, 202.5, 198.6, 197.4, 199.1]
    wseg = {r.batch_size: r.value for r in RECIPES["wseg-voc"].published if r.kind == "throughput"}
    assert wseg == {1: 5.26, 4: 3.68, 8: 2.29, 16: 2.28}
    dsb = max(r.value for r in RECIPES["unetpp-dsb2018"].published if r.hardware == "Ascend 310P3"
              and r.kind == "throughput")
    assert round(dsb, 1) == 2495.6


@pytest.mark.skipif(not (SHARED / "seeds").is_dir(), reason="the seed guides are not on this machine")
def test_every_published_number_is_printed_in_a_seed_or_the_cited_docs():
    """Each value appears in the seeds (or METRICS.md, which quotes the paper) as is or as a percentage."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted((SHARED / "seeds").glob("*.txt")))
    text += (SHARED / "METRICS.md").read_text(encoding="utf-8")
    printed = [(float(m.group(1)), bool(m.group(2))) for m in re.finditer(r"(\d+(?:\.\d+)?)\s?(%?)", text)]
    for recipe in RECIPES.values():
        for row in recipe.published:
            if "seed guide" not in row.source and row.model == "u2netp":
                continue  # U²-Netp's paper figures: the paper is not among the shared documents
            found = any(abs(value - (row.value * 100 if pct else row.value)) < 1e-6 for value, pct in printed)
            assert found, f"{recipe.name}: {row.value} ({row.source}, {row.hardware}) is not printed in the seeds"


def test_get_recipe_accepts_underscores_and_suggests():
    assert get_recipe("unetpp_dsb2018").name == "unetpp-dsb2018"
    with pytest.raises(KeyError, match="Did you mean u2net-ecssd"):
        get_recipe("u2net-ecsd")


def test_cpu_defaults_are_modest_and_recorded():
    options = resolve_options("u2net-ecssd", asked=RunRequest(weights="random", device="cpu"))
    assert options.batch_sizes == RECIPES["u2net-ecssd"].cpu_batch_sizes
    assert options.precisions == ("fp32",)
    assert options.bench_iters <= 5 and options.bench_warmup <= 1
    assert options.model == "u2net" and options.dataset == "ecssd" and options.data_root is None
    cuda_like = resolve_options("u2net-ecssd", asked=RunRequest(weights="random", device="cuda"))
    assert cuda_like.batch_sizes == (1, 4, 8, 16, 32, 64) and cuda_like.bench_iters == 50


def test_weights_are_required_with_the_way_to_get_them():
    with pytest.raises(ValueError) as err:
        resolve_options("unet-carvana", asked=RunRequest(device="cpu"))
    message = str(err.value)
    assert "unet_carvana_scale0.5_epoch2.pth" in message and "--weights random" in message
    assert resolve_options("unetpp-bigmb", asked=RunRequest(device="cpu")).weights == "random"  # the guide's own choice


def test_overrides_are_checked():
    with pytest.raises(ValueError, match="runs u2net, u2netp"):
        resolve_options("u2net-ecssd", asked=RunRequest(weights="random", device="cpu", model="unet_carvana"))
    with pytest.raises(ValueError, match="no dataset step"):
        resolve_options("unetpp-bigmb", asked=RunRequest(device="cpu", dataset="ecssd"))
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_options("u2net-ecssd", asked=RunRequest(weights="random", device="cpu", backends=["tensorrt"]))
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_options("u2net-ecssd", asked=RunRequest(weights="random", device="cpu", precisions=["fp8"]))
    with pytest.raises(FileNotFoundError):
        resolve_options("u2net-ecssd", asked=RunRequest(weights="/nonexistent/u2net.pth", device="cpu"))
    options = resolve_options(
        "unetpp-dsb2018", asked=RunRequest(weights="random", device="cpu", model="unetpp_dsb2018")
    )
    assert options.model == "unetpp_dsb2018"
    options = resolve_options("u2net-ecssd", asked=RunRequest(weights="random", device="cpu", dataset="msra-b"))
    assert options.dataset == "msra-b"


@pytest.mark.parametrize("name", list(RECIPES))
def test_model_accuracy_comes_from_the_registry_once(name):
    """A model's published accuracy lives in its weight variants; the recipe repeats none of it."""
    recipe = RECIPES[name]
    expected = [(model, p.metric, p.value, p.source) for model in recipe.allowed_models()
                for p in get_spec(model).official.published]
    from_registry = [(r.model, r.metric, r.value, r.source) for r in recipe.published[:len(expected)]]
    assert from_registry == expected
    own = {(r.metric, r.value, r.source) for r in recipe.guide_rows if r.kind == "accuracy"}
    assert not own & {(m, v, s) for _, m, v, s in expected}
    assert all(r.hardware != "—" or r.kind == "accuracy" for r in recipe.guide_rows)
