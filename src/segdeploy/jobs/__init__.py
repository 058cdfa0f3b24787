"""What a user asks for, built from the engine and a backend: predict files, a warm Session, evaluate
a dataset."""
