"""``auto``'s first choice on an empty cache: made in seconds, never by calibrating.

The full probe (:func:`segdeploy.backends.auto_probe.probe`) quantizes and times every candidate:
minutes on a small CPU. A command that just wants masks gets instead, on the CPU:

1. a packaged int8 artifact for exactly these weights (``assets/int8/*.provenance.json``: made
   and judged on held-out photos by ``scripts/make_u2netp_int8.py``), judged again here against
   PyTorch fp32 on :func:`segdeploy.backends.auto.held_out_photos` — it runs only if it passes;
2. otherwise fp32 on the fastest engine installed (OpenVINO, ONNX Runtime, PyTorch): fp32 computes
   the same function, and its export is parity-checked against PyTorch when it is made.

``segdeploy auto MODEL`` runs the full probe on request and replaces the cached quick choice.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Callable


from segdeploy.backends.auto import AutoChoice, ProbeRow, held_out_photos, static_choice
from segdeploy.engine.fidelity import fidelity_gate
from segdeploy.backends.base import RuntimeUnavailable, get_runtime_class


def packaged_int8(spec, weights_id: str) -> Path | None:
    """The packaged int8 IR made from these weights (``weights_id`` "sha256:...") whose recorded
    gate passed, or None. Artifacts live in ``segdeploy/assets/int8`` beside a provenance file."""
    if not weights_id.startswith("sha256:"):
        return None
    folder = Path(str(resources.files("segdeploy").joinpath("assets", "int8")))
    if not folder.is_dir():
        return None
    for record_path in sorted(folder.glob("*.provenance.json")):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            continue
        if (record.get("model") == spec.name and record.get("weights_sha256") == weights_id[len("sha256:"):]
                and (record.get("gate") or {}).get("passed") is True):
            xml = folder / record.get("artifact", "")
            if xml.is_file() and xml.with_suffix(".bin").is_file():
                return xml
    return None


def _judge_images(spec):
    from segdeploy.engine.transforms import preprocess_with_valid

    named = held_out_photos()
    batches, sizes = [], []
    for _, image in named:
        chw, _ = preprocess_with_valid(image, spec)
        batches.append(chw[None])
        sizes.append(image.shape[:2])
    return [name for name, _ in named], batches, sizes


def judge_packaged(module, spec, xml: Path, seed: int, say: Callable[[str], None]) -> ProbeRow:
    """Gate the packaged IR ``xml`` against PyTorch fp32 on the held-out photos."""
    from segdeploy.backends import open_configured as _open
    from segdeploy.backends.auto import auto_options
    from segdeploy.backends.auto_probe import _run_images

    t0 = time.perf_counter()
    ids, batches, sizes = _judge_images(spec)
    row = ProbeRow("openvino", "int8", "packaged", "error", judged=len(ids), artifact=str(xml))
    say(f"auto: judging the packaged int8 model ({xml.name}) against PyTorch fp32 on {len(ids)} held-out photos")
    reference_rt = _open(module, "torch", "cpu", "fp32", None, None, seed=seed)
    reference = _run_images(reference_rt, batches)
    runtime = _open(module, "openvino", "cpu", "int8", None, str(xml), seed=seed, **auto_options("openvino"))
    passed, measures, reason = fidelity_gate(spec, "int8", reference, _run_images(runtime, batches), sizes, ids)
    row.status, row.measures, row.reason = ("pass" if passed else "fail"), measures, reason
    row.seconds = round(time.perf_counter() - t0, 2)
    return row


def quick_choice(module, spec, device: str, precision: str | None, weights_id: str, *, seed: int = 0,
                 say: Callable[[str], None] = lambda message: None) -> AutoChoice:
    """The first choice on an empty cache (see the module docstring); CPU only."""
    hint = f"`segdeploy auto {spec.name}` measures every configuration"
    table: list[ProbeRow] = []
    if precision in (None, "int8") and get_runtime_class("openvino").is_available():
        xml = packaged_int8(spec, weights_id)
        if xml is not None:
            try:
                row = judge_packaged(module, spec, xml, seed, say)
            except (RuntimeUnavailable, RuntimeError, ValueError, OSError) as exc:
                row = ProbeRow("openvino", "int8", "packaged", "error", reason=f"{type(exc).__name__}: {exc}"[:300])
            table.append(row)
            if row.status == "pass":
                say(f"auto: the packaged int8 model passed the gate on {row.judged} held-out photos "
                    f"({row.seconds:.1f} s)")
                return AutoChoice("openvino", "int8",
                                  f"openvino int8 (packaged NNCF model): its fidelity gate passed against PyTorch "
                                  f"fp32 on {row.judged} held-out photos; {hint}", "quick", quantizer="packaged",
                                  artifact=str(xml), table=table, made_by="quick")
            say(f"auto: the packaged int8 model failed the gate here ({row.reason.split(';')[0]}); using fp32")
    base = static_choice(device, precision)
    say(f"auto: no cached choice for {spec.name} on this machine; running {base.backend} {base.precision}, the "
        f"fastest engine installed, without a probe ({hint})")
    return AutoChoice(base.backend, base.precision,
                      f"{base.backend} {base.precision}: the fastest engine installed here, chosen without timing "
                      f"(fp32 exports are checked against PyTorch when made); {hint}", "quick", table=table,
                      made_by="quick")


__all__ = ["packaged_int8", "judge_packaged", "quick_choice"]
