"""``--engine local|ray`` and the Ray options, shared by ``predict`` and ``eval`` so they read the same.

Why ``--ray-workers`` and not ``--workers``: ``predict --workers`` already means reader/writer
*threads* of the local engine; Ray's workers are *processes* (actors), each holding its own opened
runtime and reserving ``--cpus-per-worker`` CPUs and ``--gpus-per-worker`` GPUs on the cluster. One
name for two different things would change the meaning of a command line when --engine changes.
"""

from __future__ import annotations

import argparse
from typing import Any

from segdeploy.cli.common import count, positive_number

ENGINE_HELP = """\
local: this process (threads). ray: a Ray cluster (pip install "segdeploy[ray]"): reading and
preprocessing in Ray tasks, inference on --ray-workers actors that each open the runtime once,
outputs written by the workers (OUTDIR must be a path every node sees)."""


def engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scale-out (--engine ray)")
    group.add_argument("--engine", choices=("local", "ray"), default="local", help=ENGINE_HELP)
    group.add_argument("--address", metavar="auto|ray://HOST:PORT|HOST:PORT", default=None,
                       help="Ray cluster to join (default: start a local Ray instance for this run)")
    group.add_argument("--ray-workers", type=count(1), default=1, metavar="N",
                       help="Ray actors running inference, each with its own runtime (default: 1)")
    group.add_argument("--cpus-per-worker", type=positive_number, default=1.0, metavar="C",
                       help="CPUs reserved per Ray actor; also its runtime's thread count (default: 1)")
    group.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                       help="GPUs per Ray actor, fractions share a GPU (default: 1 with --device cuda, else 0)")


def ray_options(args: argparse.Namespace):
    """The :class:`segdeploy.scale.cluster.RayOptions` of a parsed command line."""
    from segdeploy.scale import require_ray

    require_ray()  # fail first, with the install command, before any planning
    from segdeploy.scale.cluster import RayOptions

    gpus = args.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if str(args.device).startswith("cuda") else 0.0
    return RayOptions.from_env(address=args.address, workers=args.ray_workers,
                               cpus_per_worker=args.cpus_per_worker, gpus_per_worker=gpus)


def job_engine(args: argparse.Namespace, command: str):
    """The engine ``--engine`` names (:class:`segdeploy.jobs.engine.Engine`), its options checked."""
    check_local_only(args, command)
    if args.engine == "ray":
        from segdeploy.scale.engine import RayEngine

        return RayEngine(ray_options(args))
    from segdeploy.jobs.engine import LocalEngine

    return LocalEngine()


def check_local_only(args: argparse.Namespace, parser_name: str) -> None:
    """Ray options given without --engine ray are a mistake the user should hear about."""
    if args.engine == "local" and (args.address or args.ray_workers != 1 or args.gpus_per_worker is not None
                                   or args.cpus_per_worker != 1.0):
        from segdeploy.core.errors import UsageError

        raise UsageError(f"{parser_name}: --address/--ray-workers/--cpus-per-worker/--gpus-per-worker need "
                         "--engine ray")


def ray_note(stages: dict[str, Any] | None) -> str | None:
    """One line about the cluster a Ray run used, or None for a local run."""
    ray = (stages or {}).get("ray") if isinstance(stages, dict) else None
    if not ray:
        return None
    gpus = f" + {ray['gpus_per_worker']:g} GPU" if ray["gpus_per_worker"] else ""
    note = (f"ray: {ray['workers']} workers × {ray['cpus_per_worker']:g} CPU{gpus} on {ray['nodes']} node(s) "
            f"({ray['address']}); Ray start-up {ray['startup_s']:.1f} s, not counted in images/s")
    lost, stray = ray.get("workers_lost", 0), ray.get("stray_temporaries_removed", 0)
    if lost or stray:
        # Ray replaces a lost actor and reruns its unfinished inputs: the masks are complete, but the
        # user should know that a worker died (memory, a node going away) and the run took longer.
        note += ((f"; {lost} worker(s) lost" if lost else "; a worker was lost")
                 + " and replaced, their unfinished inputs rerun"
                 + (f" ({stray} partial file(s) of theirs removed)" if stray else ""))
    return note
