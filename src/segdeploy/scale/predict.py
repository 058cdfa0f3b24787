"""``segdeploy predict --engine ray``: the local engine's file-to-file job on a Ray cluster.

Planning, resuming and recording are the local engine's, from :mod:`segdeploy.jobs.plan`:
:func:`plan_predict_job` finds the inputs (local ones through the local ``find_inputs``; URIs through
pyarrow), plans the same mirrored output paths, applies the same input policy, refuses the same
folders and skips the inputs the folder's manifest records as done. The driver writes the manifest
from the actors' status rows (:meth:`PredictPlan.record`), so both engines leave the same
``.segdeploy-manifest.json``. Actors read with the same input policy and write with the local
``write_prediction``.

Exactly once: the driver plans only inputs not yet done; an actor that dies mid-block is restarted
and the block retried, and the retry counts outputs that the dead attempt already renamed into
place during this job (modified since the job started) as written without writing them again.
Temporary files a killed write left behind are removed at the end of the job.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from segdeploy.core.errors import UsageError
from segdeploy.core.registry import get_spec
from segdeploy.engine.finder import IMAGE_SUFFIXES
from segdeploy.jobs.options import PredictOptions
from segdeploy.jobs.plan import PredictSummary, find_inputs, plan_predict_job, planned_outputs
from segdeploy.jobs.predict import progress_bar
from segdeploy.scale.cluster import RayOptions, pool_arguments, ray_session
from segdeploy.scale.workers import PredictActor, actor_request, is_uri, map_rows, read_predict_rows


def find_sources(inputs: list[str], recursive: bool = False) -> list[tuple[str, Path]]:
    """Local inputs through the local engine's ``find_inputs``; URIs listed through pyarrow.

    Returns (source as text, path relative to its input root) pairs, in the local engine's order. A URI
    names a file or a folder (prefix); glob patterns are for local paths only.
    """
    return [(str(source), rel) for source, rel in find_local_and_uris(inputs, recursive)]


def find_local_and_uris(inputs: list, recursive: bool, out_dir: Path | None = None) -> list[tuple[Any, Path]]:
    """The Ray engine's finder for :func:`plan_predict_job`: local inputs exactly as the local
    engine finds them (``Path`` sources, the output tree excluded), URIs as strings."""
    if not any(is_uri(str(item)) for item in inputs):
        return list(find_inputs(inputs, recursive, out_dir))
    found: list[tuple[Any, Path]] = []
    for item in inputs:  # mixed local paths and URIs: expand each in the order given
        if is_uri(str(item)):
            found.extend(_list_uri(str(item), recursive))
        else:
            found.extend(find_inputs([item], recursive, out_dir))
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


def predict_files_ray(model: str, inputs: list[str], out_dir: str | os.PathLike, options: PredictOptions | None = None,
                      *, ray: RayOptions, progress: bool = True) -> PredictSummary:
    """Like :func:`segdeploy.jobs.predict.predict_files`, with inference on a Ray actor pool.

    Same plan, skip rule and manifest as the local engine (see the module docstring).
    ``summary.seconds`` and ``images_per_s`` cover the job on the cluster; Ray's start-up (or connect)
    time is in ``summary.stages["ray"]["startup_s"]``. ``out_dir`` must be visible to every worker
    node at the same path (a shared filesystem) — the workers write the outputs.

    Raises:
        UsageError: as :func:`segdeploy.jobs.plan.plan_predict_job`, before Ray starts.
    """
    options = options or PredictOptions()
    spec = get_spec(model)
    plan = plan_predict_job(spec, inputs, out_dir, options, finder=find_local_and_uris)
    summary = plan.summary
    todo = [{"index": index, "source": str(source), "target": str(target)}
            for index, (source, target, _) in enumerate(plan.todo)]
    if not todo:
        plan.release()
        return summary
    job = _RayJob(plan, options, ray)
    try:
        info = job.run(todo, progress)
    finally:
        job.record_new()
        plan.release()
    # Rows arrive in block-completion order; the local engine reports failures in input order.
    order = {str(source): index for index, (source, _, _) in enumerate(plan.todo)}
    summary.failed.sort(key=lambda failure: order.get(failure["path"], len(order)))
    missing = [item for item in todo if item["index"] not in job.results]
    if missing:  # Ray Data returns every row or raises; this guards the exactly-once promise
        raise RuntimeError(f"Ray returned no result for {len(missing)} inputs (first: {missing[0]['source']})")
    removed = remove_stray_temporaries([Path(item["target"]) for item in todo], cutout=plan.cutout,
                                       save_prob=options.save_prob)
    summary.runtime = job.meta.get("runtime")
    summary.selection = job.meta.get("selection")
    summary.weights = job.meta.get("weights")
    summary.images_per_s = round(summary.written / summary.seconds, 3) if summary.seconds > 0 else None
    summary.stages = {"engine": "ray", "ray": {**info, "workers": ray.workers,
                                               "cpus_per_worker": ray.cpus_per_worker,
                                               "gpus_per_worker": ray.gpus_per_worker,
                                               "stray_temporaries_removed": removed,
                                               "actors_answered": len(job.actors),
                                               "workers_lost": max(0, len(job.actors) - ray.workers)}}
    return summary


class _RayJob:
    """One planned predict job on a Ray actor pool: its results as they arrive and their manifest entries."""

    def __init__(self, plan, options: PredictOptions, ray: RayOptions) -> None:
        self.plan, self.options, self.ray = plan, options, ray
        self.request = actor_request(options.runtime, ray.cpus_per_worker)
        self.results: dict[int, tuple[str, str]] = {}
        self.recorded: set[int] = set()
        self.meta: dict[str, Any] = {}
        self.actors: set[str] = set()  # one meta (node + pid) per actor that answered: more than workers = lost

    def record_new(self) -> None:
        """Enter every result not yet entered in the manifest (and the summary's counts)."""
        for index in sorted(set(self.results) - self.recorded):
            status, reason = self.results[index]
            source, _, key = self.plan.todo[index]
            self.plan.record(source, key, None if status == "written" else reason)
            self.recorded.add(index)

    def _dataset(self, todo: list[dict], job_started: float):
        import ray

        plan, options, batch_size, name = self.plan, self.options, self.options.batch_size, self.plan.spec.name
        # ~4 blocks per worker keeps every actor fed while the last blocks are read
        blocks = max(1, min(len(todo), 4 * self.ray.workers))
        ds = ray.data.from_items(todo, override_num_blocks=blocks)
        ds = ds.map_batches(map_rows(read_predict_rows, model=name, keep_image=plan.cutout,
                                     max_size=options.max_size, max_pixels=options.max_pixels),
                            batch_size=batch_size * 4, num_cpus=self.ray.read_cpus)
        return ds.map_batches(PredictActor, batch_size=batch_size * 4,
                              fn_constructor_args=(name, self.request, batch_size),
                              fn_constructor_kwargs={"cutout": plan.cutout, "save_prob": options.save_prob,
                                                     "background": options.background,
                                                     "max_pixels": options.max_pixels, "since": job_started,
                                                     "kill_after": self.ray.kill_after,
                                                     "kill_marker": self.ray.kill_marker},
                              **pool_arguments(self.ray))

    def run(self, todo: list[dict], progress: bool) -> dict[str, Any]:
        """Run the job; returns Ray's start-up record."""
        plan = self.plan
        job_started = time.time()
        with ray_session(self.ray) as info:
            # Saved once Ray is up (a missing Ray leaves no output folder). The runtime opens in the
            # actors: what ran is recorded from their rows (set_runtime below).
            plan.begin(None, runtime_known=False)
            start = time.perf_counter()
            ds = self._dataset(todo, job_started)
            bar = progress_bar(progress, len(todo), f"{plan.spec.name} on ray")
            last_save = time.monotonic()
            with bar:
                task = bar.add_task("predict", total=len(todo)) if bar.enabled else None
                for row in ds.iter_rows():
                    self.results[int(row["index"])] = (str(row["status"]), str(row["reason"]))
                    self.actors.add(str(row["meta"]))
                    if not self.meta:
                        self.meta = json.loads(row["meta"])
                        plan.set_runtime(self.meta.get("runtime"))
                    if task is not None:
                        bar.advance(task)
                    if time.monotonic() - last_save > 5.0:  # a killed driver loses at most ~5 s of entries
                        self.record_new()
                        plan.save()
                        last_save = time.monotonic()
            plan.summary.seconds = round(time.perf_counter() - start, 3)
        return info


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
