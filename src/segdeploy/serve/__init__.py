"""HTTP serving (FastAPI app, dynamic batcher, Ray Serve deployment)."""
