"""Image reading and atomic output writing."""
