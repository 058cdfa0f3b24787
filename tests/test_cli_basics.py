import json
import subprocess
import sys

from segdeploy.cli.main import main
from segdeploy.core.registry import list_models


def _heavy_after(code: str) -> str:
    code = ("import sys\n" + code +
            "heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'cv2', 'onnx') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_help_imports_no_heavy_library():
    out = _heavy_after("from segdeploy.cli.main import build_parser\nbuild_parser().format_help()\n")
    assert "HEAVY []" in out


def test_list_and_info_import_no_runtime_library():
    # A model is one file (network + registration), so listing the registry imports torch; the
    # runtime libraries and the ONNX stack stay unloaded.
    out = _heavy_after("from segdeploy.cli.main import main\n"
                       "for argv in (['list', '--json'], ['info', 'u2net', '--json']):\n    main(argv)\n")
    assert "HEAVY ['torch']" in out


def test_list_json_names_every_model(capsys):
    assert main(["list", "--json"]) == 0
    names = [m["name"] for m in json.loads(capsys.readouterr().out)]
    assert names == list_models()


def test_info_shows_checkpoint_and_preprocessing(capsys):
    assert main(["info", "unet_carvana", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["weights"][0]["file_name"] == "unet_carvana_scale0.5_epoch2.pth"
    assert info["preprocess"]["scale"] == 0.5 and info["preprocess"]["interpolation"] == "bicubic"


def test_unknown_model_is_one_clear_line(capsys):
    assert main(["info", "u2nett"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'u2nett'" in err and "u2net" in err and "Traceback" not in err
