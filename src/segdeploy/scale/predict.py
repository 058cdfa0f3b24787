"""``segdeploy predict --engine ray``: the local engine's file-to-file job on a Ray cluster.

Planning and writing are the local engine's functions, imported from :mod:`segdeploy.jobs.predict`:
``find_images`` (inputs → files), ``output_paths`` (file → ``OUT/<rel>/<stem>.png``),
``planned_outputs`` (the files one input produces, for resuming) and ``write_prediction`` (encode +
atomic write, run inside the actors). The summary is the local engine's :class:`PredictSummary`.

Exactly once: the driver plans only inputs whose outputs are missing; an actor that dies mid-block is
restarted and the block retried, and the retry counts outputs that the dead attempt already renamed
into place as written without writing them again. Temporary files a killed write left behind are
removed at the end of the job.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from segdeploy.core.errors import UsageError
from segdeploy.core.registry import get_spec
from segdeploy.engine.images import IMAGE_SUFFIXES
from segdeploy.jobs.predict import PredictSummary, _progress_bar, find_images, output_paths, planned_outputs
from segdeploy.scale.cluster import RayOptions, pool_arguments, ray_session
from segdeploy.scale.workers import PredictActor, is_uri, map_rows, read_predict_rows


def find_sources(inputs: list[str], recursive: bool = False) -> list[tuple[str, Path]]:
    """Local inputs through the local engine's ``find_images``; URIs listed through pyarrow.

    Returns (source, path relative to its input root) pairs, in the local engine's order. A URI
    names a file or a folder (prefix); glob patterns are for local paths only.
    """
    if not any(is_uri(str(item)) for item in inputs):
        return [(str(path), rel) for path, rel in find_images(inputs, recursive=recursive)]
    found: list[tuple[str, Path]] = []
    for item in inputs:  # mixed local paths and URIs: expand each in the order given
        if is_uri(str(item)):
            found.extend(_list_uri(str(item), recursive))
        else:
            found.extend((str(path), rel) for path, rel in find_images([item], recursive=recursive))
    return found


def _list_uri(uri: str, recursive: bool) -> list[tuple[str, Path]]:
    from pyarrow import fs as pafs

    if any(ch in uri for ch in "*?["):
        raise UsageError(f"{uri}: glob patterns work on local paths only; give the folder (prefix) instead")
    filesystem, root = pafs.FileSystem.from_uri(uri)
    scheme = uri.split("://", 1)[0]
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.File:
        return [(uri, Path(Path(root).name))]
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{uri}: no such file or folder")
    selector = pafs.FileSelector(root, recursive=recursive)
    entries = sorted(e.path for e in filesystem.get_file_info(selector)
                     if e.type == pafs.FileType.File and Path(e.path).suffix.lower() in IMAGE_SUFFIXES)
    base = root.rstrip("/")
    return [(f"{scheme}://{path}" if scheme != "file" else f"file://{path}", Path(path[len(base) + 1:]))
            for path in entries]


def predict_files_ray(model: str, inputs: list[str], out_dir: str | os.PathLike, *, options: RayOptions,
                      weights=None, recursive: bool = False, batch_size: int = 1, backend: str = "auto",
                      device: str = "cpu", precision: str | None = None, cutout: bool = False,
                      save_prob: bool = False, overwrite: bool = False, progress: bool = True,
                      seed: int = 0) -> PredictSummary:
    """Like :func:`segdeploy.jobs.predict.predict_files`, with inference on a Ray actor pool.

    ``summary.seconds`` and ``images_per_s`` cover the job on the cluster; Ray's start-up (or connect)
    time is in ``summary.stages["ray"]["startup_s"]``. ``out_dir`` must be visible to every worker
    node at the same path (a shared filesystem) — the workers write the outputs.
    """
    spec = get_spec(model)
    out_dir = Path(out_dir)
    found = find_sources(inputs, recursive=recursive)
    targets = output_paths([(Path(s) if not is_uri(s) else Path(s.split("://", 1)[1]), rel) for s, rel in found],
                           out_dir)
    summary = PredictSummary(model=spec.name, found=len(found), output_dir=str(out_dir))
    todo = []
    for index, ((source, _), target) in enumerate(zip(found, targets)):
        if not overwrite and all(p.exists() for p in planned_outputs(target, cutout=cutout, save_prob=save_prob)):
            summary.skipped += 1
        else:
            todo.append({"index": index, "source": source, "target": str(target)})
    if not todo:
        return summary

    open_kwargs: dict[str, Any] = {"backend": backend, "device": device, "precision": precision,
                                   "weights": weights, "seed": seed}
    if device == "cpu":
        open_kwargs["threads"] = max(1, int(options.cpus_per_worker))
    with ray_session(options) as info:
        import ray

        start = time.perf_counter()
        # ~4 blocks per worker keeps every actor fed while the last blocks are read
        blocks = max(1, min(len(todo), 4 * options.workers))
        ds = ray.data.from_items(todo, override_num_blocks=blocks)
        ds = ds.map_batches(map_rows(read_predict_rows, model=spec.name, keep_image=cutout),
                            batch_size=batch_size * 4, num_cpus=options.read_cpus)
        ds = ds.map_batches(PredictActor, batch_size=batch_size * 4,
                            fn_constructor_args=(spec.name, open_kwargs, batch_size),
                            fn_constructor_kwargs={"cutout": cutout, "save_prob": save_prob, "overwrite": overwrite,
                                                   "kill_after": options.kill_after,
                                                   "kill_marker": options.kill_marker},
                            **pool_arguments(options))
        results: dict[int, tuple[str, str]] = {}
        meta: dict[str, Any] = {}
        bar = _progress_bar(progress, len(todo), f"{spec.name} on ray")
        with bar:
            task = bar.add_task("predict", total=len(todo)) if bar.enabled else None
            for row in ds.iter_rows():
                results[int(row["index"])] = (str(row["status"]), str(row["reason"]))
                meta = meta or json.loads(row["meta"])
                if task is not None:
                    bar.advance(task)
        summary.seconds = round(time.perf_counter() - start, 3)
    missing = [item for item in todo if item["index"] not in results]
    if missing:  # Ray Data returns every row or raises; this guards the exactly-once promise
        raise RuntimeError(f"Ray returned no result for {len(missing)} inputs (first: {missing[0]['source']})")
    for item in todo:
        status, reason = results[item["index"]]
        if status == "written":
            summary.written += 1
        else:
            summary.failed.append({"path": item["source"], "reason": reason})
    removed = remove_stray_temporaries([Path(item["target"]) for item in todo], cutout=cutout, save_prob=save_prob)
    summary.runtime = meta.get("runtime")
    summary.selection = meta.get("selection")
    summary.weights = meta.get("weights")
    summary.images_per_s = round(summary.written / summary.seconds, 3) if summary.seconds > 0 else None
    summary.stages = {"engine": "ray", "ray": {**info, "workers": options.workers,
                                               "cpus_per_worker": options.cpus_per_worker,
                                               "gpus_per_worker": options.gpus_per_worker,
                                               "stray_temporaries_removed": removed}}
    return summary


def remove_stray_temporaries(targets: list[Path], *, cutout: bool, save_prob: bool) -> int:
    """Delete ``.<name>.*.tmp`` files (atomic writes cut short by a killed worker) of this job's outputs.

    Returns how many were removed. Only names of this job's planned outputs are touched.
    """
    by_dir: dict[Path, set[str]] = {}
    for target in targets:
        for path in planned_outputs(target, cutout=cutout, save_prob=save_prob):
            by_dir.setdefault(path.parent, set()).add(path.name)
    removed = 0
    for folder, names in by_dir.items():
        try:
            entries = list(folder.iterdir())
        except FileNotFoundError:
            continue
        for entry in entries:
            name = entry.name
            if name.startswith(".") and name.endswith(".tmp"):
                stem = name[1:-4]
                if any(stem.startswith(n + ".") for n in names):
                    entry.unlink(missing_ok=True)
                    removed += 1
    return removed
