"""End-to-end pass of the bench harness: the product's streaming pipeline over a folder of images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.bench.records import EndToEnd
from segdeploy.bench.timing import now, throughput




def image_files(folder: Path, limit: int | None) -> list[tuple[Path, Path]]:
    from segdeploy.engine.finder import find_images

    files = find_images([folder])
    return files[:limit] if limit is not None else files


def run_end_to_end(
    runtime: Any, spec: Any, files: Sequence[tuple[Path, Path]], batch_size: int, out_dir: Path, *,
    workers: int, pure_images_per_s: float | None = None,
) -> EndToEnd:
    """One timed pass of :func:`segdeploy.engine.pipeline.stream_predictions` writing PNG masks.

    ``files`` are (path, path relative to the folder) pairs; masks go to ``out_dir/<rel>.png``.
    The first batch is run once untimed beforehand (warm-up for the real input shape, thread
    pools started). Images are counted from the batches the runtime actually ran (a partial last
    batch, or batches closed early because consecutive inputs differ in size, count what they held).
    """
    from segdeploy.engine.images import read_image
    from segdeploy.engine.writers import write_png
    from segdeploy.engine.pipeline import StageTimes, StreamOptions, stream_predictions

    if not files:
        raise ValueError("no images to run end to end")

    def read(item: tuple[Path, Path]) -> np.ndarray:
        return read_image(item[0])

    def sink(item: tuple[Path, Path], image: np.ndarray, prediction: Any) -> int:
        write_png(out_dir / item[1].with_suffix(".png"), np.asarray(prediction.mask))
        return 1

    stream = StreamOptions(batch_size=batch_size, workers=workers)
    warm = list(stream_predictions(files[:batch_size], read, runtime, spec, stream))
    for outcome in warm:
        if not outcome.ok:
            raise RuntimeError(f"{outcome.item[0]}: end-to-end warm-up failed: {outcome.error}")
    times = StageTimes()
    written = 0
    failures: list[str] = []
    start = now()
    for outcome in stream_predictions(files, read, runtime, spec, stream, sink=sink, times=times):
        if outcome.ok:
            written += int(outcome.sink_result or 0)
        else:
            failures.append(f"{outcome.item[0]}: {outcome.error}")
    wall = now() - start
    images = int(sum(times.batch_sizes))
    if images == 0:
        raise RuntimeError("end to end: no image went through the runtime; " + "; ".join(failures[:3]))
    ips = throughput(images, wall)
    return EndToEnd(
        images=images,
        batches=times.batches,
        wall_s=wall,
        images_per_s=ips,
        ratio_to_pure=None if not pure_images_per_s else ips / pure_images_per_s,
        masks_written=written,
        workers=workers,
        failed=len(failures),
        stage_seconds={"read": times.read, "preprocess": getattr(times, "preprocess", 0.0), "infer": times.infer,
                       "decode": times.decode, "write": getattr(times, "write", 0.0)},
    )


