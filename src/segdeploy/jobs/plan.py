"""Planning a ``predict`` job into an output folder, shared by the local engine
(:func:`segdeploy.jobs.predict.predict_files`) and the Ray engine
(:func:`segdeploy.scale.predict.predict_files_ray`): which inputs, which output paths, what is
already done (the folder's manifest), and the manifest entries of the files each run writes."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from segdeploy.core.errors import ImageReadError, UsageError
from segdeploy.core.specs import ModelSpec
from segdeploy.engine.transforms import InputPolicy
from segdeploy.jobs.folder_lock import FolderLock
from segdeploy.jobs.manifest import Manifest, differences, run_settings, runtime_settings
from segdeploy.jobs.options import PredictOptions
from segdeploy.jobs.outputs import plan_outputs, weights_identity
from segdeploy.jobs.sizing import check_memory


@dataclass
class PredictSummary:
    """What a ``predict_files`` run did. Every number the CLI prints is here."""

    model: str
    found: int = 0
    written: int = 0
    skipped: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: seconds spent opening the runtime (model build, export / compile, auto probe), inside ``seconds``
    load_seconds: float = 0.0
    #: images written / seconds of the streaming loop (the model already loaded)
    images_per_s: float | None = None
    weights: dict[str, Any] | None = None
    runtime: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None
    stages: dict[str, Any] | None = None
    output_dir: str = ""
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def planned_outputs(target: Path, *, cutout: bool = False, save_prob: bool = False) -> list[Path]:
    """Every file one input produces: ``<stem>.png``, ``<stem>_cutout.png``, ``<stem>.npy``."""
    paths = [target]
    if cutout:
        paths.append(target.with_name(target.stem + "_cutout.png"))
    if save_prob:
        paths.append(target.with_suffix(".npy"))
    return paths


def source_id(source) -> str:
    """How the manifest names an input: its absolute path, or the URI as given (``s3://...``)."""
    text = str(source)
    return text if "://" in text else os.path.abspath(text)


@dataclass
class PredictPlan:
    """What a ``predict`` job into ``out_dir`` has to do, decided before any runtime is opened.

    Shared by the local engine (:func:`predict_files`) and the Ray engine
    (:func:`segdeploy.scale.predict.predict_files_ray`), so both find the same inputs, plan the same
    output paths, skip the same finished files and keep the same manifest.

    Attributes:
        todo: ``(source, target, key)`` per input still to predict, in input order; ``key`` is the
            target relative to ``out_dir`` (the manifest's key).
        summary: the job's summary, with ``found`` / ``skipped`` / ``warnings`` filled in.
        manifest: the folder's manifest (None until :meth:`begin` when there was none or ``overwrite``).
    """

    spec: ModelSpec
    policy: InputPolicy
    out_dir: Path
    settings: dict[str, Any]
    todo: list[tuple[Any, Path, str]]
    summary: PredictSummary
    manifest: Manifest | None
    cutout: bool
    save_prob: bool
    background: tuple[int, ...] | None
    max_pixels: int | None
    #: manifest keys this run has recorded (written or failed)
    recorded: set = field(default_factory=set)
    #: the output folder's lock (jobs.folder_lock), held until :meth:`release`
    lock: Any = None

    def release(self) -> None:
        """Give the output folder up (the manifest saved first)."""
        if self.lock is not None:
            self.save()
            self.lock.release()
            self.lock = None

    def wanted(self, target: Path) -> list[Path]:
        return planned_outputs(target, cutout=self.cutout, save_prob=self.save_prob)

    def begin(self, describe: dict[str, Any] | None, *, runtime_known: bool = True) -> None:
        """Check the opened runtime against the folder's manifest, then save the manifest.

        ``describe`` is ``runtime.describe()``. With ``runtime_known=False`` (the runtime opens
        elsewhere, e.g. in Ray actors) the folder's recorded runtime is kept until :meth:`set_runtime`. Saved before the
        first mask, so that files of a run killed early are known as this run's.

        Raises:
            UsageError: the folder was made with another backend or precision.
        """
        ran = runtime_settings(describe)
        manifest = self.manifest
        if manifest is not None and manifest.runtime is not None and ran is not None and manifest.files:
            changes = differences(manifest.runtime, ran)
            if changes:
                raise UsageError(f"{self.out_dir} holds masks made with another backend or precision: "
                                 + "; ".join(changes)
                                 + ". Nothing was changed. Pass --overwrite to recompute them, or choose another -o.")
        if manifest is None:
            manifest = self.manifest = Manifest(settings=self.settings)
        manifest.settings = self.settings
        if runtime_known:
            manifest.runtime = ran
        self.save()

    def set_runtime(self, describe: dict[str, Any] | None) -> None:
        """Record the runtime that ran (the Ray engine learns it from its actors' rows)."""
        if self.manifest is not None and describe:
            self.manifest.runtime = runtime_settings(describe)

    def adopt_written(self, since_ns: int) -> None:
        """After an interruption: record the inputs whose every output this run wrote (modified
        since ``since_ns``) but whose outcome it had not counted yet, so that the files on disk and
        the manifest agree and a rerun skips exactly them."""
        for source, target, key in self.todo:
            if key in self.recorded:
                continue
            try:
                fresh = all(p.stat().st_mtime_ns >= since_ns for p in self.wanted(target))
            except OSError:
                continue
            if fresh:
                self.record(source, key)

    def record(self, source, key: str, reason: str | None = None) -> None:
        """Count one finished input and enter it in the manifest (``reason``: why it failed)."""
        self.recorded.add(key)
        if reason is None:
            self.summary.written += 1
            self.manifest.files[key] = {"source": source_id(source), "status": "written"}
        else:
            self.summary.failed.append({"path": str(source), "reason": reason})
            self.manifest.files[key] = {"source": source_id(source), "status": "failed", "reason": reason}

    def save(self) -> None:
        if self.manifest is not None:
            self.manifest.save(self.out_dir)


def failure_reason(error: BaseException) -> str:
    """The reason recorded for a failed input: the reader's reason, else the exception."""
    return error.reason if isinstance(error, ImageReadError) else f"{type(error).__name__}: {error}"


def plan_predict_job(spec: ModelSpec, inputs: list, out_dir: str | os.PathLike, options: PredictOptions, *,
                     runtime=None, finder: Callable[[list, bool, Path], list] | None = None,
                     log: Callable[[str], None] | None = None) -> PredictPlan:
    """Find the inputs, plan their outputs and decide what is left to do; nothing is written.

    ``finder(inputs, recursive, out_dir)`` lists ``(source, relative path)`` pairs (default
    :func:`find_inputs`; the Ray engine's also lists URIs).

    Raises:
        UsageError: an output folder that is a file or an input folder, two inputs with one output
            path, an output that would replace an input, a folder made with other settings, or
            existing outputs with no manifest (without ``overwrite``).
    """
    policy = InputPolicy.for_model(spec, options.max_size)
    out_dir = Path(out_dir)
    say = log or (lambda text: None)
    request = options.runtime
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {out_dir}: is an existing file, not a folder; give a folder for the masks "
                         "(or a single input with -o FILE.png)")
    for item in inputs:
        folder = item if os.path.isdir(item) else _pattern_base(str(item))
        if folder is not None and os.path.realpath(folder) == os.path.realpath(out_dir):
            suggestion = Path(folder) / "masks"
            raise UsageError(f"-o {out_dir} is the input folder {item}: masks would be written among (and over) "
                             f"the source images; choose another folder, e.g. -o {suggestion}")
    skipped: list[str] = []
    found = list(finder(inputs, options.recursive, out_dir) if finder
                 else find_inputs(inputs, options.recursive, out_dir, skipped))
    targets = plan_outputs(found, out_dir)
    summary = PredictSummary(model=spec.name, found=len(found), output_dir=str(out_dir))
    for line in skipped:
        summary.warnings.append(line)
        say(line)
    outputs = {"cutout": options.writes_cutout, "background": list(options.background) if options.background else None,
               "save_prob": options.save_prob}
    identity = weights_identity(spec, request.weights, request.seed, request.onnx_path, request.calib, runtime)
    settings = run_settings(spec, policy, identity, outputs)
    # Before the manifest is read: a run with the same settings that holds the folder is waited
    # for, so that what it wrote is then skipped; one with other settings is refused.
    lock = FolderLock.acquire(out_dir, {**settings, "asked": {"backend": request.backend,
                                                              "precision": request.precision},
                                        "overwrite": options.overwrite}, say=say)
    try:
        plan = _plan_with_manifest(PredictPlan(spec=spec, policy=policy, out_dir=out_dir, settings=settings, todo=[],
                                               summary=summary, manifest=None, cutout=options.writes_cutout,
                                               save_prob=options.save_prob, background=options.background,
                                               max_pixels=options.max_pixels),
                                   found, targets, options)
    except BaseException:
        lock.release(nothing_written=True)
        raise
    plan.lock = lock
    local = [Path(p) for p, _, _ in plan.todo if "://" not in str(p)]
    warning = check_memory(spec, policy, local, options.max_pixels)
    if warning:
        summary.warnings.append(warning)
        say(f"warning: {warning}")
    return plan


def _plan_with_manifest(plan: PredictPlan, found, targets, options: PredictOptions) -> PredictPlan:
    """Fill in ``plan`` from the folder's manifest (read under the folder lock): what is done, what is left."""
    out_dir, summary = plan.out_dir, plan.summary
    manifest = plan.manifest = None if options.overwrite else Manifest.load(out_dir)
    if manifest is not None:
        manifest.refuse_if_changed(plan.settings, out_dir)
        # An explicitly requested backend / precision is compared now, so that a folder made by
        # another one is not reported "already done"; "auto" is compared once it has chosen.
        asked = {key: value for key, value in (("backend", options.runtime.backend),
                                               ("precision", options.runtime.precision))
                 if value is not None and value != "auto"}
        made = {key: (manifest.runtime or {}).get(key) for key in asked}
        if manifest.files and manifest.runtime and asked != made:
            raise UsageError(f"{out_dir} holds masks made with another backend or precision: "
                             + "; ".join(differences(made, asked))
                             + ". Nothing was changed. Pass --overwrite to recompute them, or choose another -o.")
    for (path, _), target in zip(found, targets):
        key = target.relative_to(out_dir).as_posix()
        if manifest is not None and manifest.done(key, source_id(path), plan.wanted(target)):
            summary.skipped += 1
            continue
        if not options.overwrite and manifest is None:
            existing = [p for p in plan.wanted(target) if p.exists()]
            if existing:
                raise UsageError(f"{existing[0]} exists and {out_dir} has no segdeploy manifest saying how it was "
                                 "made; pass --overwrite to replace such files, or choose another -o")
        plan.todo.append((path, target, key))
    return plan


def _pattern_base(item: str) -> str | None:
    """The folder a glob pattern searches (its parts before the first wildcard), None for a path."""
    if os.path.lexists(item) or not set("*?[") & set(item):
        return None
    parts = Path(item).parts
    first = next(i for i, part in enumerate(parts) if set("*?[") & set(part))
    return os.path.join(*parts[:first]) if first else "."


def find_inputs(inputs: Iterable, recursive: bool, out_dir: Path,
                skipped: list[str] | None = None) -> list[tuple[Path, Path]]:
    """Inputs with their output-relative paths; the output tree is never searched. Files in the
    folders that are not read (a GIF, a video) are named in ``skipped``."""
    from segdeploy.engine.finder import find_images

    return find_images(inputs, recursive=recursive, exclude=[out_dir], skipped=skipped)
