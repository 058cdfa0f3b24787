"""segdeploy serve: one model over HTTP with dynamic batching, checked at start-up."""

from __future__ import annotations

from segdeploy.cli.common import (BackendsHelp, backend_name, device_name, model_argument, precision_name,
                                  torch_arguments, torch_options, weights_argument)

DESCRIPTION = """\
Serve a model over HTTP (FastAPI + uvicorn, or Ray Serve with --ray).

Start-up: the model is opened on the chosen backend/precision (auto = the fastest this machine
runs), checked against its PyTorch fp32 reference (the fidelity gate: the packaged real photos
for trained weights, generated images for random ones, or --check-images DIR), warmed up, and
only then served. VERIFIED means a passed gate on the served file (by sha256), these weights and
preprocessing, >= 16 named images and the default thresholds; a --reference report must name all
of them. Anything else refuses to start (exit 3) unless --allow-unverified, which marks the model
unverified in GET /v1/models and in an X-Segdeploy-Unverified: true header on every response.

Memory: each request is priced from its image header before decoding and admitted against
--max-inflight-bytes (503 + Retry-After when in use). Connections must send their headers within
--header-timeout; at most --max-connections are open.

Concurrent requests are batched: a request waits at most --max-wait-ms for others of the same
input size, up to --max-batch-size per forward pass (in sizes 1, 2, 4, ... and the maximum, so a
static-shape engine compiles a few models, not one per size). On a small CPU one image already
fills every core and batching gains little; under steady load there, --streams <cores>
--max-batch-size 1 serves the most (see docs/serving.md, "Load test").

Routes: / (a page to try the model in a browser), POST /v1/models/MODEL/predict
(?output=mask|cutout|prob|json), GET /v1/models, /healthz, /readyz, /metrics (Prometheus), /docs
and /redoc (offline), and POST /api/remove for rembg clients. Binds 127.0.0.1;
any other --host needs --api-key (or $SEGDEPLOY_API_KEY). Ctrl-C / SIGTERM finishes the requests
in flight before exiting.
"""

EPILOG = """\
examples:
  segdeploy serve u2netp --weights official
  curl -F file=@photo.jpg http://127.0.0.1:8000/v1/models/u2netp/predict -o mask.png
  segdeploy serve u2net --weights u2net.pth --backend openvino --max-batch-size 8 --max-wait-ms 20
  segdeploy serve u2netp --backend openvino --streams 2 --max-batch-size 1   # steady load, 2 cores
  segdeploy serve u2netp --ray --replicas 2
"""


def register(sub) -> None:
    import argparse

    from segdeploy.core.errors import exit_code_table

    parser = sub.add_parser("serve", help="serve a model over HTTP with dynamic batching", description=DESCRIPTION,
                            epilog=EPILOG + "\n" + exit_code_table(), formatter_class=argparse.RawDescriptionHelpFormatter)
    model_argument(parser)
    weights_argument(parser)
    parser.add_argument("--onnx", metavar="FILE", help="ONNX file for onnxruntime / openvino (default: cached export)")
    parser.add_argument("--backend", default="auto", type=backend_name, help=BackendsHelp("auto | {backends} (default: auto)"))
    parser.add_argument("--device", default="cpu", type=device_name, help="cpu | cuda (default: cpu)")
    parser.add_argument("--precision", default=None, type=precision_name, help="fp32 | fp16 | bf16 | int8 (default: fp32 or the auto choice)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--api-key", default=None, help="require this key ('Authorization: Bearer KEY' or "
                        "'X-API-Key: KEY'); default $SEGDEPLOY_API_KEY; required for a --host other than loopback")
    group = parser.add_argument_group("batching and limits")
    group.add_argument("--max-batch-size", type=int, default=8, metavar="N", help="images per forward pass (default: 8)")
    group.add_argument("--max-wait-ms", type=float, default=10.0, metavar="T",
                       help="longest wait for a batch to fill, ms (default: 10)")
    group.add_argument("--max-queue", type=int, default=128, metavar="N",
                       help="requests waiting for inference before 503 (default: 128)")
    group.add_argument("--workers", type=int, default=1, metavar="N",
                       help="inference workers, each with its own runtime and thread (default: 1)")
    group.add_argument("--timeout", type=float, default=60.0, metavar="S", help="per-request limit, s (default: 60)")
    group.add_argument("--max-body-bytes", type=int, default=20 * 1024 * 1024, metavar="B",
                       help="largest request body (default: 20 MiB)")
    group.add_argument("--max-pixels", type=int, default=40_000_000, metavar="P",
                       help="largest image, width x height (default: 40 M)")
    group.add_argument("--max-inflight-bytes", default=None, metavar="SIZE",
                       help="memory the requests in flight may hold once decoded, priced from each image's header "
                       "before decoding (e.g. 2GB, 512MiB); over it: 503 + Retry-After (default: 25%% of the "
                       "memory available at start-up)")
    group.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                       help="seconds a connection has to send a request's headers before it is closed (default: 10)")
    group.add_argument("--max-connections", type=int, default=512, metavar="N",
                       help="open connections at most; more are closed on arrival (default: 512)")
    group.add_argument("--threads", type=int, default=None, metavar="N", help="runtime CPU threads (default: backend's)")
    torch_arguments(group)
    group.add_argument("--streams", type=int, default=None, metavar="N",
                       help="OpenVINO: N forward passes at once, each on its own cores (default: 1, every core on "
                       "one pass: the lowest latency for a lone request). Under steady load on a small CPU, "
                       "--streams <cores> --max-batch-size 1 is the fastest (2-core EPYC, u2netp, 16 clients: "
                       "2.92 vs 2.43 requests/s; a lone request 698 vs 432 ms)")
    gate = parser.add_argument_group("fidelity gate")
    gate.add_argument("--allow-unverified", action="store_true",
                      help="serve even if the gate fails (marked unverified in /v1/models and response headers)")
    gate.add_argument("--reference", metavar="FILE",
                      help="take the gate verdict from a `segdeploy compare --json` report instead of re-running it")
    gate.add_argument("--check-images", default="16", metavar="N|DIR",
                      help="the gate's images: N built-in ones (generated, plus the packaged photos for trained "
                      "weights) or a folder of your own (default: 16; fewer than 16 never verify)")
    gate.add_argument("--check-size", default="240x320", metavar="HxW", help="size of the check images (default: 240x320)")
    ray = parser.add_argument_group("Ray Serve")
    ray.add_argument("--ray", action="store_true", help="deploy on Ray Serve instead of uvicorn")
    ray.add_argument("--replicas", type=int, default=1, metavar="N", help="Ray Serve replicas (default: 1)")
    ray.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    ray.add_argument("--cpus-per-replica", type=float, default=1.0, metavar="C", help="CPUs per replica (default: 1)")
    ray.add_argument("--gpus-per-replica", type=float, default=0.0, metavar="G", help="GPUs per replica (default: 0)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default: info)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import sys

    from segdeploy.backends import get_runtime_class, is_auto
    from segdeploy.cli.common import size_hw
    from segdeploy.core.errors import UsageError
    from segdeploy.core.registry import get_spec
    from segdeploy.jobs.options import RuntimeRequest
    from segdeploy.serve.config import ServeConfig, parse_bytes, resolve_api_key

    spec = get_spec(args.model)
    try:
        check_size = tuple(size_hw(args.check_size))
    except Exception as exc:  # argparse.ArgumentTypeError carries the message
        raise UsageError(f"--check-size: {exc}") from None
    api_key = resolve_api_key(args.host, args.api_key)
    check_images = _check_images(args.check_images)
    budget = parse_bytes(args.max_inflight_bytes) if args.max_inflight_bytes is not None else None
    config = ServeConfig(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                         workers=args.workers, request_timeout_s=args.timeout, max_body_bytes=args.max_body_bytes,
                         max_pixels=args.max_pixels, allow_unverified=args.allow_unverified,
                         check_images=check_images, check_size=check_size, api_key=api_key,
                         max_inflight_bytes=budget, header_timeout_s=args.header_timeout,
                         max_connections=args.max_connections)
    from segdeploy.backends.base import consumes

    if args.precision == "int8" and not is_auto(args.backend) and consumes(args.backend) != "module" and not args.onnx:
        raise UsageError(f"serve --backend {args.backend} --precision int8 needs the quantized model to serve: add "
                         "--onnx FILE (made with `segdeploy quantize`, calibrated on real photos); the server "
                         "gates that file, it never quantizes on its own")
    options = {"threads": args.threads} if args.threads else {}
    options.update(torch_options(args))
    if args.streams is not None:
        if args.streams < 1:
            raise UsageError(f"--streams must be at least 1, got {args.streams}")
        if not is_auto(args.backend) and "streams" not in get_runtime_class(args.backend).option_names:
            raise UsageError(f"--streams is an OpenVINO setting; --backend {args.backend} has no streams "
                             "(use --workers for more runtimes)")
        options["streams"] = args.streams

    request = RuntimeRequest(weights=args.weights, backend=args.backend, device=args.device, precision=args.precision,
                             onnx_path=args.onnx, seed=args.seed, backend_options=options)

    def log(message: str) -> None:
        print(f"segdeploy serve: {message}", file=sys.stderr, flush=True)

    if args.ray:
        from segdeploy.serve.ray_deploy import run_ray

        return run_ray(spec.name, request, config=config, reference=args.reference, replicas=args.replicas,
                       address=args.address, host=args.host, port=args.port, cpus_per_replica=args.cpus_per_replica,
                       gpus_per_replica=args.gpus_per_replica, log=log)

    import uvicorn

    from segdeploy.serve.app import create_app
    from segdeploy.serve.connections import uvicorn_settings

    app = create_app(spec.name, request, config=config, reference=args.reference, log=log)
    service = next(iter(app.state.segdeploy.services.values()))
    state = app.state.segdeploy
    log(f"serving {spec.name} ({service.runtimes[0].name} {service.runtimes[0].precision}, "
        f"{'VERIFIED' if service.verified else 'UNVERIFIED'}) on http://{args.host}:{args.port} "
        f"— page at /, docs at /docs; memory budget {state.budget.limit / 1e9:.2f} GB in flight")
    # One process: batching needs every request in the same queue. uvicorn answers SIGINT/SIGTERM
    # by refusing new connections and waiting for the requests in flight before the lifespan ends.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, workers=1,
                timeout_graceful_shutdown=max(30, int(args.timeout)), **uvicorn_settings(config))
    return 0


def _check_images(value: str) -> int | str:
    """--check-images: a count, or a folder of images."""
    import os

    from segdeploy.core.errors import UsageError

    if value.isdigit():
        return int(value)
    if os.path.isdir(value):
        return value
    raise UsageError(f"--check-images {value}: neither a count nor a folder")
