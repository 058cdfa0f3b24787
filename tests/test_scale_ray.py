"""`predict` / `eval` with --engine ray: same outputs and scores as the local engine, resumable,
tolerant of a worker killed mid-job, and on a two-node ray.cluster_utils.Cluster (loopback only).

One local Ray instance is shared by the module (start-up is ~10 s); the two-node test stops it and
runs last. Random weights on the PyTorch backend, small images. Predict runs unetpp_dsb2018 (96×96
network input): on this shared 2-core machine u2netp (320×320) took 418 s for the 40 images under a
load average of 16, and the Ray path does not depend on the model; eval runs u2netp (SOD metrics).
"""

from __future__ import annotations

import builtins
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdeploy.cli.main import main
from tests.helpers_datasets import make_ecssd_tree

MODEL = "unetpp_dsb2018"
SOD_MODEL = "u2netp"
COMMON = ["--weights", "random", "--backend", "torch", "--quiet"]


def make_inputs(root: Path, n: int = 40, seed: int = 0) -> Path:
    """``n`` files: JPEG/PNG/BMP/TIFF/WebP in RGB, L, LA, P, RGBA, I;16, CMYK, in sub-folders, plus
    broken ones (a truncated JPEG, a text file named .png, an empty .jpg) and a stem clash."""
    rng = np.random.default_rng(seed)
    (root / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
    broken = {"broken_truncated.jpg", "broken_text.png", "broken_empty.jpg"}
    written = 0
    modes = ("RGB", "L", "LA", "P", "RGBA", "I;16", "CMYK")
    formats = (".jpg", ".png", ".bmp", ".tif", ".webp")
    while written < n - len(broken) - 2:
        h, w = (int(v) for v in rng.integers(9, 48, size=2))
        mode = modes[written % len(modes)]
        ext = formats[written % len(formats)]
        if mode in ("LA", "RGBA", "P", "I;16") and ext in (".jpg", ".bmp"):
            ext = ".png"
        if mode == "CMYK":
            ext = ".jpg"
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(rgb)
        if mode == "I;16":
            image = Image.fromarray((rng.integers(0, 65535, (h, w))).astype(np.uint16))
        elif mode != "RGB":
            image = image.convert(mode)
        folder = root / ("sub" if written % 3 == 1 else "sub/deeper" if written % 3 == 2 else "")
        image.save(folder / f"img{written:02d}{ext}")
        written += 1
    # stem clash: clash.jpg and clash.png → clash.jpg.png and clash.png.png
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / "clash.jpg")
    Image.fromarray(rng.integers(0, 256, (21, 25, 3), dtype=np.uint8)).save(root / "clash.png")
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    (root / "broken_truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "broken_text.png").write_text("this is not a PNG\n")
    (root / "broken_empty.jpg").write_bytes(b"")
    assert sum(1 for p in root.rglob("*") if p.is_file()) == n
    return root


MANIFEST = ".segdeploy-manifest.json"


def tree(folder: Path) -> dict[str, bytes]:
    """Every output file's bytes by relative path (the manifest is compared by :func:`manifest_of`)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def manifest_of(folder: Path) -> dict:
    """The output folder's manifest: format, settings, runtime run and one entry per output."""
    return json.loads((folder / MANIFEST).read_text())


def run_predict(inputs: Path, out: Path, *extra: str, json_path: Path | None = None) -> tuple[int, dict]:
    json_path = json_path or out.parent / f"{out.name}.json"
    rc = main(["predict", MODEL, str(inputs), "--recursive", "-o", str(out), "--cutout", *COMMON,
               "--json", str(json_path), *extra])
    return rc, json.loads(json_path.read_text())


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    # 3 logical CPUs: two 1-CPU actors plus the 0.5-CPU read tasks fit (the machine has 2 cores)
    ray.init(num_cpus=3, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def local_outputs(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    rc, summary = run_predict(images, out)
    assert rc == 1 and summary["written"] == 37 and len(summary["failed"]) == 3
    return out, summary


def test_missing_ray_names_the_install_command(monkeypatch, tmp_path, images, capsys):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    rc = main(["predict", MODEL, str(images), "-o", str(tmp_path / "out"), "--engine", "ray", *COMMON])
    assert rc == 2
    assert 'pip install "segdeploy[ray]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ray_options_need_engine_ray(tmp_path, images, capsys):
    rc = main(["predict", MODEL, str(images), "-o", str(tmp_path / "out"), "--ray-workers", "2", *COMMON])
    assert rc == 2 and "--engine ray" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_on_ray_equals_local_engine_and_resumes(local_ray, images, local_outputs, tmp_path):
    local_out, local_summary = local_outputs
    out = tmp_path / "out"
    rc, summary = run_predict(images, out, "--engine", "ray", "--ray-workers", "2")
    assert rc == 1  # the three broken files, as locally
    assert tree(out) == tree(local_out)  # same names, same bytes (masks and cut-outs)
    assert {"clash.jpg.png", "clash.png.png", "sub/deeper/img02.png"} <= set(tree(out))
    for key in ("found", "written", "skipped"):
        assert summary[key] == local_summary[key], key
    assert summary["failed"] == local_summary["failed"]  # same paths, same reasons, same order
    assert {Path(f["path"]).name for f in summary["failed"]} == {"broken_truncated.jpg", "broken_text.png",
                                                                 "broken_empty.jpg"}
    assert summary["stages"]["ray"]["workers"] == 2 and summary["images_per_s"] > 0
    # a rerun resumes: nothing is recomputed, only the broken files are tried again
    # the driver records the same manifest as the local engine: same settings, same runtime, and
    # per output the same source and status (failures with the same reason)
    local_manifest, ray_manifest = manifest_of(local_out), manifest_of(out)
    assert set(ray_manifest) == set(local_manifest) == {"format", "settings", "runtime", "files"}
    assert ray_manifest["settings"] == local_manifest["settings"]
    assert ray_manifest["runtime"] == local_manifest["runtime"] and ray_manifest["runtime"]["backend"] == "torch"
    assert ray_manifest["files"] == local_manifest["files"] and len(local_manifest["files"]) == 40
    assert sum(e["status"] == "failed" for e in ray_manifest["files"].values()) == 3
    rc, again = run_predict(images, out, "--engine", "ray", "--ray-workers", "2", json_path=tmp_path / "again.json")
    assert (again["skipped"], again["written"], len(again["failed"])) == (37, 0, 3)
    assert tree(out) == tree(local_out) and manifest_of(out)["files"] == local_manifest["files"]
    # a folder made by the Ray engine resumes under the local engine (one manifest, one skip rule)
    rc, local_again = run_predict(images, out, json_path=tmp_path / "local_again.json")
    assert (local_again["skipped"], local_again["written"], len(local_again["failed"])) == (37, 0, 3)
    # two input folders with the same file name: the same mirrored layout under -o from both engines
    for name, seed in (("dirA", 1), ("dirB", 2)):
        (tmp_path / name).mkdir()
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20 + seed, 30, 3), dtype=np.uint8)).save(
            tmp_path / name / "x.jpg")
    two = [str(tmp_path / "dirA"), str(tmp_path / "dirB")]
    outs = {}
    for engine in ("local", "ray"):
        outs[engine] = tmp_path / f"two_{engine}"
        assert main(["predict", MODEL, *two, "-o", str(outs[engine]), *COMMON, "--engine", engine]) == 0
    assert sorted(tree(outs["ray"])) == ["dirA/x.png", "dirB/x.png"]
    assert tree(outs["ray"]) == tree(outs["local"])
    assert manifest_of(outs["ray"]) == manifest_of(outs["local"])


@pytest.mark.slow
def test_eval_on_ray_equals_local_engine(local_ray, tmp_path):
    root = make_ecssd_tree(tmp_path / "ECSSD", n=6)
    (root / "images" / "0003.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")  # skipped with its reason
    args = ["eval", SOD_MODEL, "--dataset", "ecssd", "--data-root", str(root), *COMMON]
    # exit 1 on both engines: one image could not be read (named under "skipped"), the rest scored
    assert main([*args, "--json", str(tmp_path / "local.json")]) == 1
    assert main([*args, "--json", str(tmp_path / "ray.json"), "--engine", "ray", "--ray-workers", "2",
                 "--batch-size", "2"]) == 1
    local = json.loads((tmp_path / "local.json").read_text())
    ray_record = json.loads((tmp_path / "ray.json").read_text())
    assert ray_record["images_scored"] == local["images_scored"] == 5
    assert ray_record["skipped"] == local["skipped"] and len(local["skipped"]) == 1
    assert set(ray_record["metrics"]) == set(local["metrics"]) and len(local["metrics"]) == 9
    for key, value in local["metrics"].items():
        assert ray_record["metrics"][key] == pytest.approx(value, rel=0, abs=1e-9), key
    assert ray_record["weights"] == local["weights"] and ray_record["runtime"]["backend"] == "torch"


@pytest.mark.slow
def test_worker_killed_mid_job_still_writes_every_output_once(local_ray, images, local_outputs, tmp_path,
                                                              monkeypatch):
    local_out, _ = local_outputs
    marker = tmp_path / "killed"
    monkeypatch.setenv("SEGDEPLOY_TEST_KILL_AFTER", "5")
    monkeypatch.setenv("SEGDEPLOY_TEST_KILL_MARKER", str(marker))
    out = tmp_path / "out"
    # one worker, blocks of 8: the kill lands in the middle of a block after 5 writes
    rc, summary = run_predict(images, out, "--engine", "ray", "--ray-workers", "1", "--batch-size", "2")
    assert marker.exists()  # the actor really died once
    assert rc == 1 and summary["written"] == 37 and len(summary["failed"]) == 3
    assert summary["stages"]["ray"]["stray_temporaries_removed"] == 1  # the write the kill cut short
    from segdeploy.cli.engine import ray_note

    assert "lost and replaced" in ray_note(summary["stages"])  # the summary says a worker died
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert tree(out) == tree(local_out)


@pytest.mark.slow
def test_two_node_cluster_on_loopback(images, local_outputs, tmp_path):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()  # the module's single-node instance; this test runs last
    local_out, _ = local_outputs
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=2)
    try:
        out = tmp_path / "out"
        rc, summary = run_predict(images, out, "--engine", "ray", "--address", cluster.address,
                                  "--ray-workers", "2")
        assert summary["stages"]["ray"]["nodes"] == 2
        assert summary["stages"]["ray"]["cluster_cpus"] == 3
        assert rc == 1 and tree(out) == tree(local_out)
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_uris_are_listed_and_read_through_pyarrow(images):
    """A pyarrow filesystem URI (file:// here; s3:// alike) expands like a local folder and reads the same."""
    from segdeploy.engine.images import read_image
    from segdeploy.engine.finder import find_images
    from segdeploy.scale.predict import find_sources
    from segdeploy.scale.workers import read_source

    local = find_images([images], recursive=True)
    remote = find_sources([f"file://{images}"], recursive=True)
    assert [str(rel) for _, rel in remote] == [str(rel) for _, rel in local]
    assert all(src.startswith("file://") for src, _ in remote)
    good = next(src for src, rel in remote if rel.name == "img00.jpg")
    np.testing.assert_array_equal(read_source(good), read_image(images / "img00.jpg"))
    from segdeploy.core.errors import ImageReadError

    bad = next(src for src, rel in remote if rel.name == "broken_text.png")
    with pytest.raises(ImageReadError) as info:
        read_source(bad)
    assert info.value.path == bad and "not an image file" in info.value.reason
