"""Every CUDA path the product takes, on a real GPU (marker ``gpu``: skipped where there is no CUDA),
plus the CPU-side behaviour of asking for CUDA on a build without it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segdeploy.backends import open_runtime  # noqa: E402
from segdeploy.cli.main import main  # noqa: E402

CUDA = torch.cuda.is_available()


def _photos(count: int, h: int = 72, w: int = 96) -> list[np.ndarray]:
    from segdeploy.backends.auto import generated_images

    return generated_images(count, h, w, seed=3)


@pytest.mark.skipif(CUDA, reason="checks a build without CUDA")
def test_device_cuda_on_a_cpu_only_build_is_a_usage_error(tmp_path, capsys):
    from PIL import Image

    Image.fromarray(_photos(1)[0]).save(tmp_path / "a.png")
    code = main(["predict", "unetpp_dsb2018", str(tmp_path / "a.png"), "-o", str(tmp_path / "m.png"),
                 "--weights", "random", "--backend", "torch", "--device", "cuda", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "CUDA" in err and "Traceback" not in err
    assert not (tmp_path / "m.png").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("mode,precision", [("eager", "fp16"), ("cudagraphs", "fp16"), ("compile", "fp16"),
                                            ("eager", "bf16"), ("eager", "tf32"), ("cudagraphs", "bf16")])
def test_every_mode_and_precision_passes_the_gate(mode, precision):
    from segdeploy.verify.compare import CompareOptions, compare

    options = {"mode": mode, "channels_last": True}
    if mode == "compile":
        options["compile_mode"] = "default"  # the quickest inductor build; the graph is the same
    report = compare("unetpp_dsb2018", "random", CompareOptions(backends=["torch"], precisions=[precision],
                                                                device="cuda", allow_few_images=True,
                                                                runtime_options={"torch": options}),
                     images=_photos(4))
    row = report.rows[0]
    assert row.status == "pass", (row.failures, row.reason)
    assert row.runtime["mode"] == mode and row.runtime["channels_last"] is True
    assert row.runtime.get("compile_fallback") is None


@pytest.mark.gpu
def test_staged_batches_in_flight_keep_their_own_data():
    rt = open_runtime("unetpp_dsb2018", "torch", device="cuda", precision="fp32", weights="random")
    ref = open_runtime("unetpp_dsb2018", "torch", device="cpu", precision="fp32", weights="random")
    batches = [np.random.default_rng(i).standard_normal((2, 3, 96, 96), dtype=np.float32) for i in range(3)]
    outs = [rt.run(b)[0] for b in batches]
    for batch, out in zip(batches, outs):
        assert np.abs(out - ref.run(batch)[0]).max() < 1e-3
    assert rt.describe()["staging"]["pinned"] is True


@pytest.mark.gpu
def test_out_of_memory_stops_the_run_with_exit_4(tmp_path, capsys):
    from PIL import Image

    # A native-size model on one large photo, with the process allowed ~0.1 % of the card.
    Image.fromarray(_photos(1, 2400, 3200)[0]).save(tmp_path / "big.png")
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(0.001)
    try:
        code = main(["predict", "unet_carvana", str(tmp_path / "big.png"), "-o", str(tmp_path / "out"),
                     "--weights", "random", "--backend", "torch", "--device", "cuda", "--precision", "fp32",
                     "--max-size", "0", "--quiet"])
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    err = capsys.readouterr().err
    assert code == 4, err
    assert "out of memory" in err and "Traceback" not in err
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.gpu
def test_predict_on_cuda_writes_the_masks_the_cpu_writes(tmp_path):
    from PIL import Image

    photos = tmp_path / "in"
    photos.mkdir()
    for i, image in enumerate(_photos(6)):
        Image.fromarray(image).save(photos / f"{i}.png")
    for device in ("cpu", "cuda"):
        code = main(["predict", "unetpp_dsb2018", str(photos), "-o", str(tmp_path / device), "--weights", "random",
                     "--backend", "torch", "--device", device, "--precision", "fp32", "--quiet"])
        assert code == 0
    for i in range(6):
        cpu = np.asarray(Image.open(tmp_path / "cpu" / f"{i}.png"), dtype=np.int16)
        gpu = np.asarray(Image.open(tmp_path / "cuda" / f"{i}.png"), dtype=np.int16)
        assert np.abs(cpu - gpu).mean() < 0.5  # fp32 on both: masks equal but for hairline pixels
