import json
import subprocess
import sys

from segdeploy.cli import main


def test_help_and_list_do_not_import_heavy_libraries():
    code = ("import sys\nfrom segdeploy.cli import main\n"
            "for argv in (['list', '--json'], ['info', 'u2net', '--json']):\n    main(argv)\n"
            "from segdeploy.cli import build_parser\nbuild_parser()\n"
            "heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'cv2', 'onnx') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_list_json_names_every_model(capsys):
    assert main(["list", "--json"]) == 0
    names = [m["name"] for m in json.loads(capsys.readouterr().out)]
    assert names == ["u2net", "u2netp", "unet_carvana", "unetpp_dsb2018", "unetpp_dsb2018_nearest", "unetpp_bigmb",
                     "unet_bigmb", "wseg_voc"]


def test_info_shows_checkpoint_and_preprocessing(capsys):
    assert main(["info", "unet_carvana", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["weights"]["file_name"] == "unet_carvana_scale0.5_epoch2.pth"
    assert info["preprocess"]["scale"] == 0.5 and info["preprocess"]["interpolation"] == "bicubic"


def test_unknown_model_is_one_clear_line(capsys):
    assert main(["info", "u2nett"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'u2nett'" in err and "u2net" in err and "Traceback" not in err
