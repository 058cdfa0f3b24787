"""The export step: the fp32 ONNX export and the int8 models made from it, one unit per artifact.

int8 gets one model per quantizer: OpenVINO runs an NNCF IR when nncf is installed (it keeps the
model's known int8-breaking convolutions float, and on the trained U²-Netp passes the gate where
the QDQ model does not), every other ONNX backend (and OpenVINO without nncf) the ONNX Runtime QDQ
model. Both are calibrated on the same images, disjoint from those the compare step judges.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segdeploy.backends import consumes, get_runtime_class
from segdeploy.recipes.options import SYNTHETIC_SEED
from segdeploy.recipes.unit_store import Config, StepSkipped

#: The quantizers whose int8 models the run uses, as results.json and the report name them.
QDQ_QUANTIZER = "ONNX Runtime QDQ (segdeploy.convert.quantize)"
NNCF_QUANTIZER = "NNCF OpenVINO IR (segdeploy.convert.nncf_quantize)"


def _ir_intact(stored: dict[str, Any]) -> bool:
    """A stored NNCF unit is reusable only while both halves of its IR are the files written."""
    from segdeploy.convert.fingerprints import artifact_intact

    return (artifact_intact(stored.get("xml") or "", stored.get("xml_sha256"))
            and artifact_intact(stored.get("bin") or "", stored.get("bin_sha256")))


def _artifact_intact(stored: dict[str, Any]) -> bool:
    """A stored export unit is reusable only while its ONNX file is byte for byte the one written:
    its sha256 is checked (a file corrupted in place keeps its size), else it is exported again."""
    from segdeploy.convert.fingerprints import artifact_intact

    return artifact_intact(stored.get("onnx") or "", stored.get("onnx_sha256"))


class ExportStep:
    """``step_export`` and its int8 units; mixed into the Runner (see :mod:`segdeploy.recipes.runner`)."""

    def step_export(self) -> dict[str, Any]:
        needs_onnx = [b for b in self.options.backends if consumes(b) == "onnx"]
        if not needs_onnx:
            raise StepSkipped("no ONNX backend in --backends (the others run the network themselves)")
        usable, reasons = self._onnx_users([p for p in self.options.precisions if p != "int8"])
        if not usable:
            raise StepSkipped("no ONNX backend can run here: " + "; ".join(reasons))
        try:
            import onnx  # noqa: F401
        except ImportError as exc:
            raise StepSkipped(f"onnx is not installed ({exc}); pip install onnx") from exc
        out = self.run_dir / "artifacts" / f"{self.spec.name}.onnx"
        key = {"step": "export", "input_size": list(self.spec.input_size), "out": str(out),
               "parity": "compare" in self.skip}

        def compute() -> dict[str, Any]:
            from segdeploy.convert.export import ExportOptions, export_onnx

            # export_onnx's own parity check feeds N(0, 1) noise, on which random-weight networks
            # saturate some outputs (u2netp's d6 peaks near 1e-5) and fail a relative gate by
            # rounding alone. The compare step is the gate here: real images, every backend,
            # tolerances scaled by PyTorch's measured fp32 noise. Parity runs only without it.
            parity = "compare" in self.skip
            result = export_onnx(self.module(), out_path=out, seed=self.options.seed, spec=self.spec,
                                 options=ExportOptions(input_size=self.spec.input_size, check_parity=parity))
            from segdeploy.zoo.checkpoints import file_sha256

            data = result.to_dict()
            return {"label": "onnx", "backend": "onnx", "precision": "fp32", "onnx": str(out),
                    "onnx_sha256": file_sha256(out), "onnx_bytes": out.stat().st_size, "export": data,
                    "parity": "export_onnx parity check" if parity else
                    "checked by the compare step (every backend vs PyTorch fp32 on real images)"}

        unit = self._unit("export", "onnx", key, compute, _artifact_intact)
        unit.setdefault("label", "onnx")
        self.reporter.unit_finished("export", unit)
        if unit["status"] == "done":
            self._onnx = unit["onnx"]
            self._export_fp = unit["fingerprint"]
        elif unit["status"] == "skipped":
            raise StepSkipped(unit["reason"])
        else:
            raise RuntimeError(unit["reason"])
        if "int8" in self.options.precisions:
            usable, reasons = self._onnx_users(["int8"])
            if not usable:
                unit["int8"] = {"label": "int8", "status": "skipped", "resumed": False,
                                "reason": "no ONNX backend runs int8 here: " + "; ".join(reasons)}
                return unit
            by_nncf = [c.backend for c in usable if get_runtime_class(c.backend).int8_quantizer() == "nncf"]
            by_qdq = [c.backend for c in usable if c.backend not in by_nncf]
            if by_qdq:
                unit["int8"] = self._quantize(by_qdq)
            if by_nncf:
                unit["int8_nncf"] = self._quantize_nncf(by_nncf)
        return unit

    def _onnx_users(self, precisions: list[str]) -> tuple[list[Config], list[str]]:
        """ONNX-backend configurations among ``precisions`` that can run here, and why the others can't.

        Uses the backends' cheap availability checks (library importable, device, precision offered),
        so that nothing is exported or quantized for configurations that will be skipped anyway.
        """
        from segdeploy.backends import RuntimeUnavailable, get_runtime_class

        usable, reasons = [], []
        for backend in self.options.backends:
            if consumes(backend) != "onnx":
                continue
            for precision in precisions:
                try:
                    get_runtime_class(backend).check(self.options.device, precision, {})
                except (RuntimeUnavailable, ValueError) as exc:
                    reasons.append(f"{backend} {precision}: {exc}")
                else:
                    usable.append(Config(backend, precision))
        return usable, list(dict.fromkeys(reasons))

    def _quantize(self, backends: list[str]) -> dict[str, Any]:
        """int8 QDQ model of the export for ``backends``, calibrated on --calib images or the compare inputs."""
        out = self.run_dir / "artifacts" / f"{self.spec.name}-int8.onnx"
        calib_dir = dict(self.options.extra).get("calib")
        key = {"step": "quantize", "onnx": self._export_fp, "calib": calib_dir or self._calib_described(),
               "num_calib": self._num_calib(), "out": str(out)}

        def compute() -> dict[str, Any]:
            from segdeploy.convert.quantize import QuantizeOptions, quantize_onnx
            from segdeploy.zoo.checkpoints import file_sha256

            calib = calib_dir or self._calibration()
            result = quantize_onnx(self.module(), calib=calib, out_path=out, onnx_path=self._onnx, spec=self.spec,
                                   options=QuantizeOptions(num_calib=self._num_calib()), seed=self.options.seed)
            data = result.to_dict()
            data.pop("metadata", None)
            return {"label": "int8", "onnx": str(out), "onnx_sha256": file_sha256(out),
                    "onnx_bytes": out.stat().st_size, "quantize": data}

        unit = self._unit("export", "int8", key, compute, _artifact_intact)
        unit.update(label="int8", quantizer=QDQ_QUANTIZER, backends=backends)
        self.reporter.unit_finished("export", unit)
        if unit["status"] == "done":
            self._int8.update({b: (unit["onnx"], unit["fingerprint"]) for b in backends})
        return unit

    def _quantize_nncf(self, backends: list[str]) -> dict[str, Any]:
        """OpenVINO int8 IR of the export made by NNCF, calibrated on the same images as the QDQ model.

        NNCF keeps ``spec.int8_float_layers`` float; on the trained U²-Netp its IR passes the gate
        where the QDQ model run by OpenVINO does not (benchmarks/results/int8_trained_u2netp_cpu.md)."""
        out = self.run_dir / "artifacts" / f"{self.spec.name}-int8-nncf.xml"
        calib_dir = dict(self.options.extra).get("calib")
        key = {"step": "quantize-nncf", "onnx": self._export_fp, "calib": calib_dir or self._calib_described(),
               "num_calib": self._num_calib(), "out": str(out), "float": list(self.spec.int8_float_layers)}

        def compute() -> dict[str, Any]:
            from segdeploy.convert.nncf_quantize import nncf_quantize
            from segdeploy.convert.quantize import calib_entries, calib_input
            from segdeploy.zoo.checkpoints import file_sha256

            entries, source = calib_entries(calib_dir or self._calibration(), self.spec, self._num_calib())
            inputs = [calib_input(entry, self.spec) for entry in entries]
            nncf_quantize(self._onnx, self.spec, inputs, out, metadata={"source_onnx": str(self._onnx)})
            bin_path = out.with_suffix(".bin")
            info = json.loads(Path(str(out) + ".json").read_text())
            return {"label": "int8 nncf", "xml": str(out), "xml_sha256": file_sha256(out),
                    "bin": str(bin_path), "bin_sha256": file_sha256(bin_path),
                    "bin_bytes": bin_path.stat().st_size, "calib_source": source, "quantize": info}

        unit = self._unit("export", "int8-nncf", key, compute, _ir_intact)
        unit.update(label="int8 nncf", quantizer=NNCF_QUANTIZER, backends=backends)
        self.reporter.unit_finished("export", unit)
        if unit["status"] == "done":
            self._int8.update({b: (unit["xml"], unit["fingerprint"]) for b in backends})
        return unit

    def quantizer(self, config: Config) -> str | None:
        """Which quantizer made the int8 model ``config`` runs (None when it runs no quantized model)."""
        if config.precision != "int8" or config.backend not in self._int8:
            return None
        return NNCF_QUANTIZER if self._int8[config.backend][0].endswith(".xml") else QDQ_QUANTIZER

    def _num_calib(self) -> int:
        from segdeploy.convert.quantize import DEFAULT_NUM_CALIB

        return int(dict(self.options.extra).get("num_calib") or DEFAULT_NUM_CALIB)

    def _calibration(self) -> list[Any] | None:
        """Calibration images for int8 when no --calib folder is given, disjoint from the images the
        compare step judges: the dataset's images after those, else synthetic images of other indices."""
        if self._calib is None:
            n, k = self.options.compare_images, self._num_calib()
            images: list[Any] = []
            if self.options.dataset and self.options.data_root:
                from segdeploy.data import get_layout

                layout = get_layout(self.options.dataset, self.options.data_root, limit=n + k,
                                    **dict(self.options.dataset_options))
                images = [layout.load(sample)[0] for sample in list(layout)[n:n + k]]
            if not images:
                from segdeploy.recipes.demo import render_sample

                images = [render_sample(i, SYNTHETIC_SEED).image for i in range(n, n + k)]
            self._calib = images
        return self._calib

    def _calib_described(self) -> str:
        n, k = self.options.compare_images, self._num_calib()
        if self.options.dataset and self.options.data_root:
            return (f"images {n + 1}-{n + k} of {self.options.dataset} at {self.options.data_root} (after the "
                    f"{n} compared), else synthetic images {n}-{n + k - 1}")
        return f"synthetic photo-like images {n}-{n + k - 1} (seed {SYNTHETIC_SEED}; the compare step judges 0-{n - 1})"
