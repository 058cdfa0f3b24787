"""The typed view of a run's results: what the report, the verdict and the plots read.

``results.json`` is written by :mod:`segdeploy.recipes.runner` (one record per step and per
backend/precision configuration, stored units for resumption). :func:`segdeploy.report.document.read_document`
is the one place that reads that document by key; everything downstream — verdict, published vs
measured, plots, Markdown and HTML templates — reads these dataclasses' attributes.

Latency percentiles: a p90 of 5 calls is an interpolation between the two slowest calls, not a
percentile anyone can reproduce, so :class:`BenchPoint` carries ``p90_ms`` only when at least
:data:`MIN_CALLS_FOR_P90` calls were timed; below that the report shows min–max instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_ID = "segdeploy.run/1"
STEP_NAMES = ("export", "runtimes", "compare", "eval", "bench", "report")
#: timed calls needed before a 90th percentile is reported as such
MIN_CALLS_FOR_P90 = 10


@dataclass(frozen=True)
class TimingConditions:
    """The machine around one timing (see :mod:`segdeploy.recipes.conditions`).

    Attributes:
        cpus: logical CPUs of the machine.
        wall_s: seconds the watched block took.
        load_before, load_after: 1/5/15-minute load averages before and after.
        cpu_mhz_before, cpu_mhz_after: mean CPU frequency in MHz before and after.
        others_cpu_share: CPU time used by *other* processes during the block, as a share of
            wall x cpus (0 = machine otherwise idle, 1 = every CPU busy with something else).
        contended: the timing was taken under contention (see ``basis``); None = unknown.
        basis: what ``contended`` was decided on, in words.
    """

    cpus: int
    wall_s: float
    load_before: tuple[float, float, float] | None = None
    load_after: tuple[float, float, float] | None = None
    cpu_mhz_before: float | None = None
    cpu_mhz_after: float | None = None
    others_cpu_share: float | None = None
    contended: bool | None = None
    basis: str = ""

    def summary(self) -> str:
        """One line: contended or not, why, load and frequency before → after."""
        word = {True: "CONTENDED", False: "quiet", None: "unknown load"}[self.contended]
        load = (f"load {self.load_before[0]} → {self.load_after[0]}" if self.load_before and self.load_after
                else "load n/a")
        mhz = (f"{self.cpu_mhz_before:.0f} → {self.cpu_mhz_after:.0f} MHz"
               if self.cpu_mhz_before and self.cpu_mhz_after else "frequency n/a")
        return f"{word}: {self.basis}; {load}; {mhz}"

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TimingConditions | None":
        if not data:
            return None
        load = {k: tuple(data[k]) if data.get(k) else None for k in ("load_before", "load_after")}
        return cls(**{**data, **load})


@dataclass(frozen=True)
class BenchPoint:
    """Pure-inference speed of one configuration at one batch size.

    ``images_per_s`` = images processed / wall time of the timed loop; latencies are per call
    (one call = one batch), in milliseconds.
    """

    batch_size: int
    images_per_s: float
    median_ms: float
    min_ms: float
    max_ms: float
    calls: int
    ms_per_image: float
    p90_ms: float | None = None
    best: bool = False


@dataclass(frozen=True)
class Fidelity:
    """A configuration against the PyTorch fp32 reference (segdeploy.verify)."""

    images: int | None = None
    cosine: float | None = None
    rel: float | None = None
    rel_output: str | None = None
    mask_iou: float | None = None
    map_mae: float | None = None
    pixel_agreement: float | None = None
    gt_metric: str | None = None
    gt_reference: float | None = None
    gt_candidate: float | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Evaluation:
    """Accuracy of one configuration on the dataset (segdeploy.jobs.evaluate)."""

    metrics: dict[str, float | None]
    images_scored: int | None = None
    images_skipped: int | None = None
    images_per_s: float | None = None


#: gate values of :class:`ConfigResult`
GATES = ("reference", "pass", "fail", "error", "not checked", "not run")


@dataclass(frozen=True)
class ConfigResult:
    """One backend x precision across every step of the run.

    ``gate``: "reference" (torch fp32, what the others are judged against), "pass", "fail"
    (``gate_reasons`` name the measure and, where the comparison says, the image), "error" (the
    comparison raised), "not checked" (opened but not compared) or "not run" (could not open
    here: ``reason`` says why).
    """

    label: str
    backend: str
    precision: str
    gate: str
    reason: str | None = None
    gate_reasons: tuple[str, ...] = ()
    fidelity: Fidelity | None = None
    bench: tuple[BenchPoint, ...] = ()
    bench_reason: str | None = None
    bench_conditions: TimingConditions | None = None
    evaluation: Evaluation | None = None
    eval_reason: str | None = None

    @property
    def passes(self) -> bool:
        """The configuration may be used: it is the reference or passes the gate."""
        return self.gate in ("reference", "pass")

    @property
    def fails(self) -> bool:
        return self.gate in ("fail", "error")

    @property
    def best(self) -> BenchPoint | None:
        return max(self.bench, key=lambda p: p.images_per_s, default=None)

    @property
    def mark(self) -> str:
        """The word every table and plot shows beside the label."""
        return {"reference": "reference", "pass": "pass", "fail": "FAIL", "error": "FAIL (error)",
                "not checked": "not checked", "not run": "not run"}[self.gate]


@dataclass(frozen=True)
class Choice:
    """The configuration ``auto`` should use: the fastest that passes the gate."""

    label: str
    backend: str
    precision: str
    images_per_s: float
    batch_size: int
    reason: str


@dataclass(frozen=True)
class Verdict:
    """What the run says, first: N pass / M fail, per configuration and why, and the choice."""

    passed: int
    failed: int
    not_run: int
    headline: str
    lines: tuple[str, ...]
    choice: Choice | None = None
    steps_failed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Comparison:
    """One published number beside this run's counterpart.

    ``comparable`` rows are shown in the table and the plot; the others are folded, with
    ``reason`` saying why (other model, other hardware class, not measured, ...). ``ratio`` =
    measured / published, only for comparable rows.
    """

    kind: str
    metric: str
    source: str
    hardware: str
    published: float
    measured: float | None
    comparable: bool
    reason: str
    batch_size: int | None = None
    precision: str | None = None
    precision_label: str = ""
    measured_config: str | None = None
    measured_on: str = ""
    ratio: float | None = None
    dataset: str | None = None
    model: str | None = None
    software: str = ""


@dataclass(frozen=True)
class StepSummary:
    name: str
    status: str
    reason: str | None
    wall_s: float | None
    resumed: bool
    brief: str


@dataclass(frozen=True)
class Weights:
    kind: str
    path: str | None = None
    sha256: str | None = None
    seed: int | None = None
    how_to_get: str = ""

    @property
    def random(self) -> bool:
        return self.kind == "random"


@dataclass(frozen=True)
class Cutout:
    """One demo photograph and what the chosen configuration made of it."""

    file: str
    title: str
    credit: str
    licence: str
    subject: bool
    cutout: str | None = None
    mask: str | None = None
    foreground: float | None = None


@dataclass(frozen=True)
class Demo:
    """What ``segdeploy demo`` ran on (photographs, weights) and what it wrote."""

    notice: str
    photos_dir: str
    cutouts: tuple[Cutout, ...] = ()
    configuration: str | None = None
    weights_note: str = ""
    #: the answer in words (the masks, the fastest faithful configuration, what was not faithful)
    answer: str = ""
    #: what `--backend auto` runs here (the same choice as predict, serve, Session)
    auto: str = ""


@dataclass(frozen=True)
class RunReport:
    """Everything the report renders, typed. Built by :func:`segdeploy.report.document.read_document`."""

    schema: str
    created_utc: str
    updated_utc: str
    recipe_name: str
    recipe_title: str
    guide: str
    recipe_model: str
    headline_metric: str
    metrics: tuple[str, ...]
    recipe_notes: tuple[str, ...]
    model: str
    device: str
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    input_size: tuple[int, int]
    dataset: str | None
    data_root: str | None
    limit: int | None
    bench_warmup: int
    bench_iters: int
    weights: Weights
    steps: tuple[StepSummary, ...]
    configs: tuple[ConfigResult, ...]
    verdict: Verdict
    published: tuple[Comparison, ...]
    warnings: tuple[str, ...]
    measured_on: str
    environment: tuple[tuple[str, str], ...]
    compare_reference: str = ""
    compare_inputs: str = ""
    compare_gate: str = ""
    eval_note: str = ""
    runtime_lines: tuple[str, ...] = ()
    demo: Demo | None = None

    @property
    def comparable(self) -> tuple[Comparison, ...]:
        return tuple(c for c in self.published if c.comparable)

    @property
    def folded(self) -> tuple[Comparison, ...]:
        return tuple(c for c in self.published if not c.comparable)

    @property
    def benched(self) -> tuple[ConfigResult, ...]:
        return tuple(c for c in self.configs if c.bench)

    @property
    def evaluated(self) -> tuple[ConfigResult, ...]:
        return tuple(c for c in self.configs if c.evaluation is not None or c.eval_reason)

    @property
    def contended(self) -> tuple[ConfigResult, ...]:
        return tuple(c for c in self.configs if c.bench_conditions and c.bench_conditions.contended)
