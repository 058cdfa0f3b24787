"""The bottom layer: model specs, the registry, errors and environment records. No torch here."""
