"""onnxref: segdeploy's ONNX export run by onnx.reference.ReferenceEvaluator, ONNX's own pure-Python
evaluator of the specification (exact, slow), registered as a segdeploy backend."""

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from segdeploy.backends import Runtime, register_runtime


@register_runtime
class OnnxReferenceRuntime(Runtime):
    name = "onnxref"                        # --backend onnxref
    library = "onnx"                        # is_available() imports it
    precisions = ("fp32",)
    consumes = "onnx"                       # load() gets the ONNX file segdeploy exports (and caches)
    devices = ("cpu",)
    auto_candidates = {"cpu": (("fp32", None),)}  # --backend auto probes it: chosen if fastest and passing

    def load(self, artifact):
        model = onnx.load(str(artifact))
        self.evaluator = ReferenceEvaluator(model)
        self.input_name = model.graph.input[0].name
        self.onnx_path = str(artifact)
        self.loaded = True
        return self

    def run(self, batch, outputs=None):
        batch = self._check_batch(batch)
        results = self.evaluator.run(None, {self.input_name: batch})  # every output, in graph order
        return [np.asarray(results[i], dtype=np.float32) for i in self._output_indices(outputs)]

    def describe(self):
        return {"backend": self.name, "model": self.spec.name, "onnx": onnx.__version__, "device": "cpu",
                "precision": self.precision, "provider": "onnx.reference.ReferenceEvaluator",
                "onnx_file": self.onnx_path}
