"""Connecting to Ray, and the knobs of the actor pool (workers, CPUs and GPUs per worker)."""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from segdeploy.core.errors import UsageError
from segdeploy.scale import require_ray


@dataclass(frozen=True)
class RayOptions:
    """How a job uses the cluster.

    Attributes:
        address: None = start a local Ray instance for this job (and stop it after); "auto" = the
            cluster this machine belongs to (``ray start`` ran here); ``ray://HOST:PORT`` = Ray Client
            to a remote head; ``HOST:PORT`` = the head's GCS address.
        workers: actors in the pool, each holding one opened runtime (default 1).
        cpus_per_worker: CPUs Ray reserves per actor (default 1); the runtime's thread count follows it.
        gpus_per_worker: GPUs per actor (default 0; 1 with --device cuda); fractions share a GPU.
        read_cpus: CPUs reserved per read + preprocess task.
        kill_after: test hook — an actor exits abruptly after this many items, once per marker file.
        kill_marker: file whose existence means the test kill already happened.
    """

    address: str | None = None
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    read_cpus: float = 0.5
    kill_after: int | None = None
    kill_marker: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UsageError(f"--ray-workers must be at least 1, got {self.workers}")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise UsageError("--cpus-per-worker must be > 0 and --gpus-per-worker ≥ 0")

    @classmethod
    def from_env(cls, **kwargs: Any) -> "RayOptions":
        """Options plus the fault-injection test hook from ``SEGDEPLOY_TEST_KILL_AFTER`` /
        ``SEGDEPLOY_TEST_KILL_MARKER`` (read on the driver and handed to the actors, so it works
        whatever environment the cluster's workers were started with)."""
        after = os.environ.get("SEGDEPLOY_TEST_KILL_AFTER")
        if after:
            kwargs.setdefault("kill_after", int(after))
            kwargs.setdefault("kill_marker", os.environ.get("SEGDEPLOY_TEST_KILL_MARKER"))
        return cls(**kwargs)

    def local_cpus(self) -> int:
        """CPUs for a local instance: at least the machine's, and enough for the pool plus reading
        (with fewer, read tasks would wait forever behind actors that hold every CPU)."""
        return max(2, os.cpu_count() or 2, math.ceil(self.workers * self.cpus_per_worker + self.read_cpus))


def quiet_ray_data() -> None:
    """One progress bar (ours) and no execution banners: Ray Data's own bars and logs are switched off."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if hasattr(ctx, "enable_operator_progress_bars"):
        ctx.enable_operator_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # "Progress bars disabled. To enable, ..." — we disabled them on purpose: ours is the one bar.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    # A rerun with only a few items left hands the pool fewer blocks than actors; that is expected.
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)


@contextmanager
def ray_session(options: RayOptions) -> Iterator[dict[str, Any]]:
    """Connect to (or start) Ray for one job; yields facts about it (start-up seconds, CPUs, address).

    An already initialised Ray (e.g. a test fixture or a notebook) is reused and left running;
    a local instance started here is shut down on exit.
    """
    ray = require_ray()
    start = time.perf_counter()
    started_here = False
    if not ray.is_initialized():
        if options.address:
            ray.init(address=options.address, logging_level=logging.WARNING, log_to_driver=True)
        else:
            ray.init(num_cpus=options.local_cpus(), include_dashboard=False, logging_level=logging.WARNING)
        started_here = True
    quiet_ray_data()
    resources = ray.cluster_resources()
    info = {
        "address": options.address or ("local (started for this job)" if started_here else "existing session"),
        "startup_s": round(time.perf_counter() - start, 3),
        "cluster_cpus": resources.get("CPU", 0.0),
        "cluster_gpus": resources.get("GPU", 0.0),
        "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
    }
    needed = options.workers * options.cpus_per_worker
    if needed > info["cluster_cpus"]:
        raise UsageError(f"{options.workers} workers × {options.cpus_per_worker} CPUs need {needed:g} CPUs; the Ray "
                         f"cluster has {info['cluster_cpus']:g}. Lower --ray-workers or --cpus-per-worker.")
    if options.workers * options.gpus_per_worker > info["cluster_gpus"]:
        raise UsageError(f"{options.workers} workers × {options.gpus_per_worker} GPUs exceed the cluster's "
                         f"{info['cluster_gpus']:g} GPUs. Lower --ray-workers or --gpus-per-worker.")
    try:
        yield info
    finally:
        if started_here:
            ray.shutdown()


def pool_arguments(options: RayOptions) -> dict[str, Any]:
    """Keyword arguments of ``Dataset.map_batches`` for the actor pool.

    Fault tolerance is Ray Data's default for actor pools, relied upon here: an actor whose process
    dies is restarted (``max_restarts=-1``) and the block it held is retried on the new one
    (``max_task_retries=-1``); tests/test_scale_ray.py kills one to prove it.
    """
    from ray.data import ActorPoolStrategy

    args: dict[str, Any] = {"compute": ActorPoolStrategy(size=options.workers), "num_cpus": options.cpus_per_worker}
    if options.gpus_per_worker:
        args["num_gpus"] = options.gpus_per_worker
    return args
