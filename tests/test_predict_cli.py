"""`segdeploy predict` on a folder of good and bad files: the acceptance scenario of the zoo issue."""

import json

import numpy as np
import pytest
from PIL import Image

from segdeploy.cli.main import main
from tests.image_zoo import make_mixed_folder, photo


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    return root, make_mixed_folder(root)


def run_cli(*argv):
    return main([str(a) for a in argv])


def test_mixed_folder_masks_failures_and_resume(mixed, tmp_path, capsys):
    root, zoo = mixed
    out = tmp_path / "out"
    summary = tmp_path / "summary.json"
    rc = run_cli("predict", "u2netp", root, "--recursive", "-o", out, "--weights", "random", "--batch-size", "3",
                 "--json", summary, "--quiet")
    err = capsys.readouterr().err
    assert rc == 1  # some inputs failed
    for rel, (height, width) in zoo["good"].items():
        mask_path = out / rel
        mask_path = mask_path.with_suffix(".png")
        mask = np.asarray(Image.open(mask_path))
        assert mask.shape == (height, width) and mask.dtype == np.uint8, rel
    for bad in zoo["bad"]:
        assert bad in err, f"{bad} not named in: {err}"
        assert not (out / bad).with_suffix(".png").exists()
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert [p.name for p in leftovers] == [".segdeploy-manifest.json"]  # the manifest, no temp files
    record = json.loads(summary.read_text())
    assert record["found"] == len(zoo["good"]) + len(zoo["bad"])
    assert record["written"] == len(zoo["good"]) and len(record["failed"]) == len(zoo["bad"])
    assert record["weights"]["kind"] == "random" and "environment" in record

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    rc = run_cli("predict", "u2netp", root, "--recursive", "-o", out, "--weights", "random", "--json", summary,
                 "--quiet")
    assert rc == 1  # the bad files still fail
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert after == before  # the second run wrote nothing
    assert json.loads(summary.read_text())["skipped"] == len(zoo["good"])


def test_cutout_and_prob_outputs(tmp_path):
    Image.fromarray(photo(30, 40)).save(tmp_path / "a.jpg")
    out = tmp_path / "o"
    assert run_cli("predict", "u2netp", tmp_path / "a.jpg", "-o", out, "--weights", "random", "--cutout",
                   "--save-prob", "--quiet") == 0
    cut = np.asarray(Image.open(out / "a_cutout.png"))
    assert cut.shape == (30, 40, 4)
    assert np.array_equal(cut[..., 3], np.asarray(Image.open(out / "a.png")))
    prob = np.load(out / "a.npy")
    assert prob.shape == (30, 40) and prob.dtype == np.float32 and 0 <= prob.min() <= prob.max() <= 1


def test_missing_weights_explains_how_to_get_them(tmp_path, capsys):
    Image.fromarray(photo(8, 8)).save(tmp_path / "a.png")
    assert run_cli("predict", "u2net", tmp_path / "a.png", "-o", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "u2net.pth" in err and "--weights random" in err


def test_wrong_checkpoint_names_the_right_model(tmp_path, capsys):
    import torch

    from segdeploy import create_model

    torch.save(create_model("u2netp", "random").state_dict(), tmp_path / "small.pth")
    Image.fromarray(photo(8, 8)).save(tmp_path / "a.png")
    assert run_cli("predict", "u2net", tmp_path / "a.png", "-o", tmp_path / "o", "--weights",
                   tmp_path / "small.pth") == 2
    err = capsys.readouterr().err
    assert "shape mismatch" in err and "'u2netp'" in err and "--model" not in err  # predict has no --model


def test_python_api_returns_masks(tmp_path):
    import segdeploy

    image = photo(21, 34)
    Image.fromarray(image).save(tmp_path / "b.png")
    masks = segdeploy.predict("unetpp_dsb2018", [image, tmp_path / "b.png"], weights="random", batch_size=2)
    assert [m.shape for m in masks] == [(21, 34), (21, 34)]
    assert set(np.unique(masks[0])) <= {0, 1}
    assert np.array_equal(masks[0], masks[1])


def test_seed_changes_random_weights(tmp_path):
    Image.fromarray(photo(24, 32)).save(tmp_path / "a.png")
    maps = []
    for seed in ("0", "0", "5"):
        out = tmp_path / f"o{len(maps)}"
        assert run_cli("predict", "unetpp_dsb2018", tmp_path / "a.png", "-o", out, "--weights", "random",
                       "--seed", seed, "--save-prob", "--quiet") == 0
        maps.append(np.load(out / "a.npy"))
    assert np.array_equal(maps[0], maps[1]) and not np.array_equal(maps[0], maps[2])


def test_weights_folder_onnx_file_and_nan_checkpoint_are_refused_by_name(tmp_path, capsys):
    import torch

    from segdeploy import create_model

    Image.fromarray(photo(8, 8)).save(tmp_path / "a.png")
    folder = tmp_path / "ckpts"
    folder.mkdir()
    assert run_cli("predict", "u2netp", tmp_path / "a.png", "-o", tmp_path / "o1", "--weights", folder,
                   "--backend", "torch", "--quiet") == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "Traceback" not in err

    onnx = tmp_path / "u2netp.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch" + b"\x00" * 64)  # an ONNX ModelProto starts with field 1 (ir_version)
    assert run_cli("predict", "u2netp", tmp_path / "a.png", "-o", tmp_path / "o2", "--weights", onnx,
                   "--backend", "torch", "--quiet") == 2
    err = capsys.readouterr().err
    assert "--onnx" in err and "weights_only=False" not in err

    state = create_model("u2netp", "random").state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first].clone()
    state[first].view(-1)[0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    assert run_cli("predict", "u2netp", tmp_path / "a.png", "-o", tmp_path / "o3", "--weights", tmp_path / "nan.pth",
                   "--backend", "torch", "--quiet") == 2
    err = capsys.readouterr().err
    assert "NaN" in err and first in err
    assert not (tmp_path / "o3" / "a.png").exists()
