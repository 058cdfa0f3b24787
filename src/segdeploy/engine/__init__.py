"""The engine: the one streaming pipeline (read → preprocess → batch → run → decode → sink), image
reading and atomic writing, and the spec-driven preprocessing. It takes an opened runtime; it never
builds one."""
