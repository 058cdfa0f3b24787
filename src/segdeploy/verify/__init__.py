"""Verification: compare a backend/precision with the PyTorch fp32 reference and gate the result."""

# Only the options class: ``segdeploy.verify.compare`` stays the module (tests patch its names),
# so the function is imported from there.
from segdeploy.verify.compare_plan import CompareOptions

__all__ = ["CompareOptions"]
