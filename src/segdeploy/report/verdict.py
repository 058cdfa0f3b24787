"""The verdict a report opens with: N pass / M fail per configuration and why, and the choice.

The choice is what ``--backend auto`` should take for this model on this machine: the fastest
configuration whose fidelity gate passes (the PyTorch fp32 reference counts as passing). Speeds
are compared at one batch size — the smallest that every passing configuration was timed at —
so that a configuration is not preferred for having been measured at a larger batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from segdeploy.report.results import Choice, ConfigResult, StepSummary, Verdict


def choose(configs: Sequence[ConfigResult]) -> Choice | None:
    """The fastest passing configuration (None when none passing was benchmarked)."""
    passing = [c for c in configs if c.passes and c.bench]
    if not passing:
        return None
    common = set.intersection(*({p.batch_size for p in c.bench} for c in passing))
    batch = min(common) if common else None

    def speed(config: ConfigResult) -> tuple[float, int]:
        points = [p for p in config.bench if batch is None or p.batch_size == batch]
        best = max(points, key=lambda p: p.images_per_s)
        return best.images_per_s, best.batch_size

    winner = max(passing, key=lambda c: speed(c)[0])
    rate, size = speed(winner)
    failing = [c.label for c in configs if c.fails and c.bench and
               any(p.images_per_s > rate for p in c.bench if p.batch_size == size)]
    why = f"fastest of {len(passing)} passing configuration(s) at batch {size}"
    if failing:
        why += f"; faster but failing the gate: {', '.join(failing)}"
    if any(c.bench_conditions and c.bench_conditions.contended for c in passing):
        why += "; timed under contention, so the ranking may change on an idle machine"
    return Choice(label=winner.label, backend=winner.backend, precision=winner.precision,
                  images_per_s=rate, batch_size=size, reason=why)


def config_line(config: ConfigResult) -> str:
    """One line per configuration: its mark, and why (measure that failed, or why it did not run)."""
    if config.gate == "reference":
        why = "the reference the others are judged against"
    elif config.gate == "pass":
        f = config.fidelity
        measures = []
        if f is not None:
            if f.mask_iou is not None:
                measures.append(f"mask IoU {f.mask_iou:.4f}")
            if f.map_mae is not None:
                measures.append(f"map MAE {f.map_mae:.4f}")
            if f.pixel_agreement is not None:
                measures.append(f"pixel agreement {f.pixel_agreement:.4f}")
            if f.rel is not None and config.precision == "fp32":
                measures.append(f"relative error {f.rel:.2g}")
        why = "within tolerance" + (f" ({', '.join(measures)})" if measures else "")
    elif config.fails:
        why = "; ".join(config.gate_reasons) or "gate failed"
    else:
        why = config.reason or config.gate
    return f"{config.mark}: {config.label} — {why}"


def make_verdict(configs: Sequence[ConfigResult], steps: Sequence[StepSummary] = ()) -> Verdict:
    """Count and explain every configuration; pick the fastest passing one."""
    passed = sum(1 for c in configs if c.passes)
    failed = sum(1 for c in configs if c.fails)
    not_run = len(configs) - passed - failed
    parts = [f"{passed} pass", f"{failed} FAIL" if failed else "0 fail"]
    if not_run:
        parts.append(f"{not_run} not run here")
    choice = choose(configs)
    headline = " / ".join(parts) + f" of {len(configs)} configurations"
    if choice is not None:
        # The fastest passing row of this run's table; what `--backend auto` runs is the backends'
        # choice (cached, the same for every command), which a caller may add beside it.
        headline += f"; fastest passing here: {choice.label} ({choice.images_per_s:.2f} images/s)"
    failed_steps = tuple(f"{s.name}: {s.reason}" for s in steps if s.status == "failed")
    order = {"fail": 0, "error": 0, "reference": 1, "pass": 2, "not checked": 3, "not run": 4}
    lines = tuple(config_line(c) for c in sorted(configs, key=lambda c: order[c.gate]))
    return Verdict(passed=passed, failed=failed, not_run=not_run, headline=headline, lines=lines, choice=choice,
                   steps_failed=failed_steps)
