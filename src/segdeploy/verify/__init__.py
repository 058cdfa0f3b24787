"""Verification: compare a backend/precision with the PyTorch fp32 reference and gate the result."""
