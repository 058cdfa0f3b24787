"""A large PNG decoded strip by strip gives the same pixels as decoding it whole and reducing it
(engine.png_strips), for every 8-bit colour type and filters that read the row above; a damaged
one fails by name; and load_image takes that path for big PNGs without changing what a model sees."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from segdeploy.core.errors import ImageReadError
from segdeploy.engine import png_strips
from segdeploy.engine.transforms import working_mode


def _png(array: np.ndarray, mode: str | None, path) -> None:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(path, optimize=False)


def _pictures():
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (203, 157, 3), dtype=np.uint8)
    y = np.linspace(0, 255, 301)[:, None]
    x = np.linspace(0, 255, 211)[None]
    smooth = np.stack([y + 0 * x, x + 0 * y, (x + y) / 2], -1).astype(np.uint8)  # Up / Paeth rows
    return noise, smooth


@pytest.mark.parametrize("mode", [None, "RGBA", "L", "P", "LA"])
@pytest.mark.parametrize("factor", [2, 3, 7])
def test_strips_equal_the_whole_image_reduced(tmp_path, monkeypatch, mode, factor):
    for index, picture in enumerate(_pictures()):
        path = tmp_path / f"{index}.png"
        _png(picture, mode, path)
        whole = Image.open(path)
        whole.load()
        expected = working_mode(whole).reduce(factor)
        monkeypatch.setattr(png_strips, "STRIP_PIXELS", picture.shape[1] * factor * 2)  # many strips
        lazy = Image.open(path)
        assert png_strips.can_decode_in_strips(lazy)
        got = png_strips.decode_reduced(lazy, factor, working_mode)
        assert got.mode == expected.mode and got.size == expected.size
        assert np.array_equal(np.asarray(got), np.asarray(expected))


def test_a_truncated_big_png_fails_by_name(tmp_path, monkeypatch):
    from segdeploy.engine.images import load_image
    from segdeploy.engine.transforms import InputPolicy
    from segdeploy.core.registry import get_spec

    rng = np.random.default_rng(0)
    y = np.linspace(0, 255, 2800, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, 3000, dtype=np.float32)[None]
    picture = np.stack([y + 0 * x, x + 0 * y, (x + y) / 2], -1).astype(np.uint8)
    picture[1000:1100] = rng.integers(0, 256, (100, 3000, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=1)
    data = buffer.getvalue()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    # a policy that reduces this image (as a 144-megapixel one is for u2netp)
    monkeypatch.setattr("segdeploy.engine.transforms.EXACT_PIXELS", 100_000)
    policy = InputPolicy.for_model(get_spec("u2netp"))
    with pytest.raises(ImageReadError, match="cut.png: corrupt or truncated"):
        load_image(tmp_path / "cut.png", policy)
    (tmp_path / "whole.png").write_bytes(data)
    calls = []
    real = png_strips.decode_reduced
    monkeypatch.setattr(png_strips, "decode_reduced", lambda *a: calls.append(a[1]) or real(*a))
    loaded = load_image(tmp_path / "whole.png", policy)
    assert calls == [4]  # the strip path was taken, reducing by 4
    whole = Image.open(tmp_path / "whole.png")
    expected = policy.reduce_pil(whole.convert("RGB"), whole.size)
    assert loaded.original_hw == (2800, 3000)
    assert np.array_equal(loaded.pixels, np.asarray(expected))
