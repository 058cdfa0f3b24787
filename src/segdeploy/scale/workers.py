"""Code that runs inside Ray: the read + preprocess tasks and the actors that hold a runtime.

Rows travel between stages with one opaque ``payload`` column (a pickled dict): the rows of one
block mix images of different sizes with failed reads that have no array at all, which Arrow tensor
columns cannot hold in one schema; a pickled column keeps the schema fixed and costs one copy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from segdeploy.core.errors import ImageReadError
from segdeploy.core.registry import get_spec
from segdeploy.engine.images import DEFAULT_MAX_PIXELS, load_image, read_image
from segdeploy.engine.transforms import InputPolicy, decode, preprocess_with_valid
from segdeploy.jobs.options import RuntimeRequest
from segdeploy.jobs.plan import failure_reason


def is_uri(source: str) -> bool:
    """True for a pyarrow filesystem URI (s3://, gs://, hdfs://, file://, ...), not a local path."""
    return "://" in source


def read_source(source: str, policy=None, *, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """Read an image from a local path, or from a URI through pyarrow's filesystems.

    Without ``policy``: the full-size HxWx3 uint8 array (:func:`read_image`). With an
    :class:`~segdeploy.engine.transforms.InputPolicy`: the local engine's :func:`load_image` result
    (a :class:`LoadedImage`, reduced as the policy says). A URI's bytes go through the same reader
    as a local file (via a temporary copy, since the reader takes paths), so decoding, EXIF
    handling and error reasons are the same.
    """
    def reader(path: str):
        if policy is None:
            return read_image(path, max_pixels=max_pixels)
        return load_image(path, policy, max_pixels=max_pixels)

    if not is_uri(source):
        return reader(source)
    from pyarrow import fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(source)
    try:
        with filesystem.open_input_stream(path) as stream:
            data = stream.read()
    except OSError as exc:
        raise ImageReadError(source, f"cannot access file ({exc})") from exc
    suffix = Path(path).suffix
    fd, tmp = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        try:
            return reader(tmp)
        except ImageReadError as exc:
            raise ImageReadError(source, exc.reason) from None
    finally:
        os.unlink(tmp)


def read_predict_rows(batch: dict[str, np.ndarray], *, model: str, keep_image: bool,
                      max_size: int | None | str = "spec",
                      max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict[str, list]:
    """Ray task: read and preprocess each ``source`` as the local engine's pipeline does (same input
    policy, same reader); failures travel on as rows with a reason."""
    spec = get_spec(model)
    policy = InputPolicy.for_model(spec, max_size)
    payloads = []
    for index, source, target in zip(batch["index"], batch["source"], batch["target"]):
        item: dict[str, Any] = {"index": int(index), "source": str(source), "target": str(target)}
        try:
            loaded = read_source(str(source), policy, max_pixels=max_pixels)
            image, _ = policy.reduce_array(loaded.pixels)
            item["array"], item["valid"] = preprocess_with_valid(image, spec)
            item["hw"] = tuple(loaded.original_hw)
            # the working copy, for a cut-out (write_prediction re-reads the source when it was reduced)
            item["image"] = image if keep_image else None
        except Exception as exc:  # recorded per item, never fatal for the job
            item["error"] = failure_reason(exc)
        payloads.append(pickle.dumps(item, protocol=5))
    return {"payload": payloads}


def read_eval_rows(batch: dict[str, np.ndarray], *, model: str, layout) -> dict[str, list]:
    """Ray task: load (image, ground truth) of each sample index and preprocess the image."""
    spec = get_spec(model)
    payloads = []
    for index in batch["index"]:
        sample = layout.samples[int(index)]
        item: dict[str, Any] = {"index": int(index), "id": sample.id, "file": str(sample.image_path)}
        try:
            image, mask = layout.load(sample)
            if mask is None:
                raise ValueError("no ground-truth mask")
            item["array"], item["valid"] = preprocess_with_valid(image, spec)
            item["hw"] = image.shape[:2]
            item["mask"] = mask
        except Exception as exc:
            item["error"] = exc.reason if isinstance(exc, ImageReadError) else str(exc)
        payloads.append(pickle.dumps(item, protocol=5))
    return {"payload": payloads}


def infer_items(runtime, items: list[dict], batch_size: int) -> Iterator[tuple[dict, list | BaseException]]:
    """Run the runtime over consecutive items of one input shape, ``batch_size`` at a time.

    The local engine's batching rule; a batch that fails as a whole is rerun item by item, so one
    bad input never costs the others.
    """
    group: list[dict] = []

    def run(chunk: list[dict]) -> Iterator[tuple[dict, list | BaseException]]:
        try:
            outputs = runtime.run(np.stack([it["array"] for it in chunk]))
        except Exception as exc:
            if len(chunk) == 1:
                yield chunk[0], exc
                return
            for it in chunk:
                yield from run([it])
            return
        for i, it in enumerate(chunk):
            yield it, [np.asarray(o[i]) for o in outputs]

    for item in items:
        if group and (group[0]["array"].shape != item["array"].shape or len(group) >= batch_size):
            yield from run(group)
            group = []
        group.append(item)
    if group:
        yield from run(group)


def actor_request(request: RuntimeRequest, cpus_per_worker: float) -> RuntimeRequest:
    """The request each actor opens: on a CPU, with the cores Ray reserved for the actor as its
    threads, not every core of the node (actors sharing a node would otherwise oversubscribe it)."""
    if request.device != "cpu":
        return request
    threads = max(1, int(cpus_per_worker))
    return dataclasses.replace(request, backend_options={**dict(request.backend_options), "threads": threads})


class _RuntimeActor:
    """Opens the runtime once per actor process; remembers what it opened for the job record."""

    def __init__(self, model: str, request: RuntimeRequest, batch_size: int,
                 kill_after: int | None = None, kill_marker: str | None = None) -> None:
        from segdeploy.jobs.predict import weights_of
        from segdeploy.jobs.session import open_model_runtime

        self.spec = get_spec(model)
        self.runtime = open_model_runtime(model, request)
        self.batch_size = batch_size
        self.meta = json.dumps({
            "runtime": self.runtime.describe() if hasattr(self.runtime, "describe") else None,
            "selection": getattr(self.runtime, "selection", None),
            "weights": weights_of(self.runtime),
            "node": os.uname().nodename, "pid": os.getpid(),
        }, default=str)
        self.kill_after = kill_after
        self.kill_marker = kill_marker
        self.done = 0

    def _count_and_maybe_die(self, last_target: Path | None = None) -> None:
        """Test hook: after ``kill_after`` items, exit abruptly once (the marker file says it happened),
        leaving a stray temporary file as a write cut short by a kill would."""
        self.done += 1
        if self.kill_after is None or self.done < self.kill_after or not self.kill_marker:
            return
        marker = Path(self.kill_marker)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # one kill per job, even with 2 actors
        except FileExistsError:
            return
        os.close(fd)
        if last_target is not None:
            stray = last_target.with_name(f".{last_target.name}.killed.tmp")
            stray.write_bytes(b"partial")
        os._exit(17)


class PredictActor(_RuntimeActor):
    """Ray actor: infer, decode and write one block of preprocessed rows; returns one status row each."""

    def __init__(self, model: str, request: RuntimeRequest, batch_size: int, *, cutout: bool, save_prob: bool,
                 background: tuple[int, ...] | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 since: float | None = None, kill_after: int | None = None, kill_marker: str | None = None) -> None:
        super().__init__(model, request, batch_size, kill_after, kill_marker)
        self.cutout = cutout
        self.save_prob = save_prob
        self.background = None if background is None else tuple(background)
        self.max_pixels = max_pixels
        self.since = since

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from segdeploy.jobs.plan import planned_outputs
        from segdeploy.jobs.predict import write_prediction

        items = [pickle.loads(p) for p in batch["payload"]]
        rows: dict[str, list] = {"index": [], "status": [], "reason": [], "meta": []}

        def emit(item: dict, status: str, reason: str = "") -> None:
            rows["index"].append(item["index"])
            rows["status"].append(status)
            rows["reason"].append(reason)
            rows["meta"].append(self.meta)

        todo = []
        for item in items:
            target = Path(item["target"])
            if "error" in item:
                emit(item, "failed", item["error"])
            elif self._written_by_this_job(planned_outputs(target, cutout=self.cutout, save_prob=self.save_prob)):
                # The driver planned only inputs not done, so these were written by an attempt of this
                # job that died before reporting (the batch is being retried): written once, not again.
                emit(item, "written")
            else:
                todo.append(item)
        for item, result in infer_items(self.runtime, todo, self.batch_size):
            if isinstance(result, BaseException):
                emit(item, "failed", failure_reason(result))
                continue
            target = Path(item["target"])
            try:
                pred = decode(result, self.spec, item["hw"], item["valid"])
                image, source = item["image"], item["source"]
                if self.cutout and is_uri(source) and image.shape[:2] != pred.mask.shape[:2]:
                    image, source = read_source(source, max_pixels=self.max_pixels), None  # full size, via pyarrow
                write_prediction(target, image, pred, self.spec, cutout=self.cutout, save_prob=self.save_prob,
                                 background=self.background, source=source, max_pixels=self.max_pixels)
            except Exception as exc:
                emit(item, "failed", failure_reason(exc))
            else:
                emit(item, "written")
            self._count_and_maybe_die(target)
        return rows

    def _written_by_this_job(self, paths: list[Path]) -> bool:
        """Every file exists and was renamed into place since the job started (``since``, seconds
        since the epoch on the driver; a shared filesystem's clock is assumed close to it)."""
        if self.since is None:
            return False
        try:
            return all(p.stat().st_mtime >= self.since - 1.0 for p in paths)
        except FileNotFoundError:
            return False


class EvalActor(_RuntimeActor):
    """Ray actor: score one block of samples; returns one row with the block's pickled metric state."""

    def __init__(self, model: str, request: RuntimeRequest, batch_size: int, *, layout,
                 save_masks: str | None = None, kill_after: int | None = None, kill_marker: str | None = None) -> None:
        super().__init__(model, request, batch_size, kill_after, kill_marker)
        from segdeploy.tasks import get_task

        self.task = get_task(self.spec)
        self.layout = layout
        self.save_dir = Path(save_masks) if save_masks else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from segdeploy.engine.writers import write_png

        items = [pickle.loads(p) for p in batch["payload"]]
        metric = self.task.metric(self.spec, self.layout)
        skipped: list[dict] = []
        ok = [it for it in items if "error" not in it]
        for it in items:
            if "error" in it:
                skipped.append({"index": it["index"], "id": it["id"], "file": it["file"], "reason": it["error"]})
        for item, result in infer_items(self.runtime, ok, self.batch_size):
            try:
                if isinstance(result, BaseException):
                    raise result
                pred = decode(result, self.spec, item["hw"], item["valid"])
                metric.update(self.task.metric_input(pred), self.task.target(self.layout, item["mask"]))
                if self.save_dir is not None:
                    array, palette = self.task.mask_image(pred)
                    write_png(self.save_dir / f"{item['id']}.png", array, palette)
            except Exception as exc:
                skipped.append({"index": item["index"], "id": item["id"], "file": item["file"], "reason": str(exc)})
            self._count_and_maybe_die()
        return {"state": [pickle.dumps(metric, protocol=5)], "items": [len(items)],
                "skipped": [json.dumps(skipped)], "meta": [self.meta]}


def map_rows(fn: Callable, **kwargs: Any) -> Callable:
    """A picklable ``batch → batch`` callable with fixed keyword arguments (for Ray tasks)."""
    import functools

    return functools.partial(fn, **kwargs)
