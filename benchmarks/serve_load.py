"""Load test of ``segdeploy serve``: the batching server vs one request per forward pass (rembg's
way) vs pure inference, on one machine, in one run.

    python benchmarks/serve_load.py                       # u2netp, --backend auto, full sweep + 10 min soak
    python benchmarks/serve_load.py --quick --out /tmp/x.json   # a minute: proves the script runs

What it does (numbers in the JSON/Markdown written to benchmarks/results/serve_<model>_cpu.*):

1. Pure inference: the same model/backend/precision opened in this process, timed with
   ``Runtime.run`` on preprocessed inputs at batch sizes 1..max; images/s at the best batch size.
2. The batching server (``segdeploy serve --max-batch-size B``) as a subprocess on 127.0.0.1; a
   bounded async httpx client keeps C requests in flight (C = 1, 2, 4, ..., 64) over a fixed set
   of JPEGs for a fixed number of requests per level: throughput (responses/s), p50/p90/p99
   latency, mean batch size (from the server's /metrics), server RSS (psutil).
3. The same sweep against the same model/backend/precision served with --max-batch-size 1.
4. A soak at concurrency 8 against the batching server for --soak-seconds, RSS sampled every
   few seconds; growth is measured from the end of warm-up (the first 20 % of the soak) to the end.
5. Other server configurations at concurrency 1 and 16 (``--variants``; default: OpenVINO with one
   stream per core at batch sizes 1 and 2), and pure inference of the streams configuration, so
   that the result file shows the fastest server this machine runs and the ceiling any batching
   could reach: best pure images/s over every configuration / the one-per-pass server's req/s.

Load average is recorded before and after every phase: the machine may be shared, and a run
under contention says so (``contended``: a 1-minute load average above the core count + 1, the
benchmark's own server and client being about one core count's worth).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def jpegs(count: int, size: tuple[int, int], seed: int = 7) -> list[bytes]:
    """Fixed, deterministic JPEG photos-like inputs (objects on gradients), quality 90."""
    from PIL import Image

    from segdeploy.serve.gate import check_images

    out = []
    for image in check_images(count, size, seed=seed):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def percentile(values, q) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


class Server:
    """``python -m segdeploy.cli.main serve ...`` on a free loopback port."""

    def __init__(self, args, max_batch_size: int, backend: str, precision: str | None, check_images: int,
                 extra: tuple[str, ...] = ()):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        cmd = [sys.executable, "-m", "segdeploy.cli.main", "serve", args.model, "--weights", args.weights,
               "--backend", backend, "--port", str(self.port),
               "--max-wait-ms", str(args.max_wait_ms), "--max-queue", "512", "--check-images", str(check_images),
               "--log-level", "warning"]
        if "--max-batch-size" not in extra:  # a variant's own batch size is the one it runs (and records)
            cmd += ["--max-batch-size", str(max_batch_size)]
        if precision:
            cmd += ["--precision", precision]
        cmd += list(extra)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
        self.command = cmd
        import tempfile

        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"segdeploy_serve_{self.port}_", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float) -> float:
        import httpx

        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError("server not ready")

    def rss_mb(self) -> float:
        import psutil

        return round(psutil.Process(self.proc.pid).memory_info().rss / 2**20, 1)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)
        return code


def batch_stats(metrics: str) -> tuple[float, float]:
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith("segdeploy_batch_size_sum"):
            total = float(line.split()[-1])
        elif line.startswith("segdeploy_batch_size_count"):
            count = float(line.split()[-1])
    return total, count


async def level(url: str, model: str, images: list[bytes], concurrency: int, requests: int | None,
                seconds: float | None = None, on_tick=None) -> dict:
    """Keep ``concurrency`` requests in flight until ``requests`` are done (or ``seconds`` pass)."""
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    issued = 0
    stop_at = time.perf_counter() + seconds if seconds else None
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        before = batch_stats((await client.get("/metrics")).text)

        async def user(index: int):
            nonlocal issued
            while True:
                if requests is not None and issued >= requests:
                    return
                if stop_at is not None and time.perf_counter() >= stop_at:
                    return
                body = images[issued % len(images)]
                issued += 1
                t0 = time.perf_counter()
                r = await client.post(f"/v1/models/{model}/predict", content=body,
                                      headers={"content-type": "image/jpeg"})
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1

        async def ticker():
            while on_tick is not None:
                on_tick()
                await asyncio.sleep(5)

        tick = asyncio.create_task(ticker())
        start = time.perf_counter()
        await asyncio.gather(*(user(i) for i in range(concurrency)))
        wall = time.perf_counter() - start
        tick.cancel()
        after = batch_stats((await client.get("/metrics")).text)
    batches = after[1] - before[1]
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors, "seconds": round(wall, 2),
            "throughput_rps": round(len(latencies) / wall, 3) if wall else None,
            "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
            "p99_ms": percentile(latencies, 99),
            "mean_batch_size": round((after[0] - before[0]) / batches, 2) if batches else None}


def sweep(args, server: Server, images, levels) -> list[dict]:
    rows = []
    for c in levels:
        load0 = loadavg()
        n = max(args.requests, c)  # at least one request per client
        row = asyncio.run(level(server.url, args.model, images, c, n))
        row.update(rss_mb=server.rss_mb(), loadavg_before=load0, loadavg_after=loadavg())
        print(f"  c={c:>3}: {row['throughput_rps']} req/s p50 {row['p50_ms']} ms p99 {row['p99_ms']} ms "
              f"batch {row['mean_batch_size']} rss {row['rss_mb']} MB load {row['loadavg_after'][0]}", flush=True)
        rows.append(row)
    return rows


def pure_inference(args, backend: str, precision: str, images: list[bytes], max_batch: int,
                   streams: int | None = None) -> dict:
    from segdeploy.backends import open_runtime
    from segdeploy.engine.transforms import preprocess_with_valid
    from segdeploy.serve.imaging import image_from_bytes

    from segdeploy.engine.inference_threads import calls_in_flight
    from segdeploy.serve.service import serving_options

    # the runtime configuration the server runs (OpenVINO: one stream over all cores unless ``streams``)
    runtime = open_runtime(args.model, backend=backend, precision=precision, weights=args.weights,
                           **serving_options(backend, {"streams": streams} if streams else None))
    print(f"  pure inference runs {runtime.name} {runtime.precision}", flush=True)
    chws = [preprocess_with_valid(image_from_bytes(b), runtime.spec)[0] for b in images]
    results = {}
    size = 1
    # A runtime that takes several calls at once (OpenVINO streams under auto) is timed with that
    # many in flight, as the server's batch workers run it.
    in_flight = calls_in_flight(runtime)
    pool = ThreadPoolExecutor(in_flight)
    while size <= max_batch:
        batch = np.stack([chws[i % len(chws)] for i in range(size)])
        list(pool.map(lambda _: runtime.run(batch), range(in_flight)))
        calls = max(2 * in_flight, args.pure_images // size)
        t0 = time.perf_counter()
        list(pool.map(lambda _: runtime.run(batch), range(calls)))
        results[str(size)] = round(calls * size / (time.perf_counter() - t0), 3)
        print(f"  pure inference batch {size} ({in_flight} in flight): {results[str(size)]} img/s", flush=True)
        size *= 2
    pool.shutdown()
    best = max(results, key=results.get)
    return {"images_per_s_by_batch": results, "best_batch_size": int(best), "best_images_per_s": results[best],
            "calls_in_flight": in_flight,
            "runtime": {k: v for k, v in runtime.describe().items() if isinstance(v, (str, int, float, bool))}}


def soak(args, server: Server, images) -> dict:
    samples: list[tuple[float, float]] = []
    start = time.perf_counter()

    def tick():
        samples.append((round(time.perf_counter() - start, 1), server.rss_mb()))

    load0 = loadavg()
    row = asyncio.run(level(server.url, args.model, images, 8, None, seconds=args.soak_seconds, on_tick=tick))
    tick()
    warm = [s for s in samples if s[0] >= 0.2 * args.soak_seconds]
    base = warm[0][1] if warm else samples[0][1]
    end = samples[-1][1]
    return {"seconds": args.soak_seconds, "concurrency": 8, **{k: row[k] for k in ("requests", "errors",
            "throughput_rps", "p50_ms", "p99_ms", "mean_batch_size")},
            "rss_after_warmup_mb": base, "rss_end_mb": end, "rss_max_mb": max(s[1] for s in samples),
            "rss_growth_pct": round(100 * (end - base) / base, 2), "rss_samples": samples,
            "loadavg_before": load0, "loadavg_after": loadavg()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="u2netp")
    parser.add_argument("--weights", default="official", help="default official; random when not available")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--concurrency", default="1,2,4,8,16,32,64")
    parser.add_argument("--single-concurrency", default=None,
                        help="levels for the one-per-pass server (default: --concurrency; it is the slow one)")
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level (at least C)")
    parser.add_argument("--images", type=int, default=12, help="distinct JPEGs sent in rotation")
    parser.add_argument("--image-size", default="480x640")
    parser.add_argument("--pure-images", type=int, default=48, help="images per batch size in the pure-inference run")
    parser.add_argument("--soak-seconds", type=float, default=600)
    parser.add_argument("--check-images", type=int, default=16, help="gate check images of the batching server")
    parser.add_argument("--single-check-images", type=int, default=None,
                        help="gate check images of the one-per-pass server (default: --check-images)")
    parser.add_argument("--variants", default="streams",
                        help="other server configurations, ';'-separated serve flags, timed at concurrency 1 and 16; "
                        "'streams' (default) = OpenVINO with one stream per core at --max-batch-size 1 and 2 "
                        "(when the served backend is OpenVINO); 'none' skips them")
    parser.add_argument("--quick", action="store_true", help="levels 1,4,16, few requests, 20 s soak")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/serve_<model>_cpu.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.requests, args.soak_seconds, args.pure_images = "1,4,16", 16, 20, 8
        args.single_concurrency = None
    levels = [int(c) for c in args.concurrency.split(",")]
    single_levels = [int(c) for c in (args.single_concurrency or args.concurrency).split(",")]
    h, w = (int(p) for p in args.image_size.split("x"))
    sys.path.insert(0, str(ROOT / "src"))
    from segdeploy.zoo import create_model

    notes = []
    try:
        create_model(args.model, args.weights)  # what the server will do; fails fast when not packaged
    except Exception as exc:  # noqa: BLE001 - official weights not packaged in this checkout
        notes.append(f"--weights {args.weights} unavailable ({exc}); used random weights (speed does not "
                     "depend on weight values)")
        args.weights = "random"
    images = jpegs(args.images, (h, w))
    from segdeploy.core.environment import environment

    record: dict = {"environment": environment(), "model": args.model, "weights": args.weights, "requested_backend": args.backend,
                    "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu_count": os.cpu_count(),
                    "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                    "settings": {"max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms,
                                 "requests_per_level": args.requests, "images": args.images, "image_size": [h, w],
                                 "levels": levels, "single_levels": single_levels,
                                 "soak_seconds": args.soak_seconds, "check_images": args.check_images,
                                 "single_check_images": args.single_check_images or args.check_images}, "notes": notes,
                    "loadavg_start": loadavg()}

    out = Path(args.out) if args.out else RESULTS / f"serve_{args.model}_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(phase: str) -> None:  # after every phase: a late failure keeps what was measured
        record["completed_phases"] = record.get("completed_phases", []) + [phase]
        out.write_text(json.dumps(record, indent=2))

    print(f"batching server (max batch {args.max_batch_size}) ...", flush=True)
    server = Server(args, args.max_batch_size, args.backend, None, args.check_images)
    record["batching_ready_s"] = round(server.wait_ready(3600), 1)
    import httpx

    served = httpx.get(server.url + "/v1/models").json()["models"][0]
    backend, precision = served["backend"], served["precision"]
    record.update(backend=backend, precision=precision, fidelity=served["fidelity"], verified=served["verified"],
                  server_command=" ".join(server.command[1:]))
    record["batching"] = sweep(args, server, images, levels)
    save("batching")
    print(f"soak at concurrency 8 for {args.soak_seconds:g} s ...", flush=True)
    record["soak"] = soak(args, server, images)
    record["batching_exit_code"] = server.stop()
    save("soak")

    print("one request per forward pass (max batch 1) ...", flush=True)
    # The same configuration as the batching server: "auto" again (its cached choice: the same
    # backend, precision and int8 file), or the backend/precision it resolved to.
    same_backend, same_precision = (args.backend, None) if args.backend == "auto" else (backend, precision)
    single = Server(args, 1, same_backend, same_precision, args.single_check_images or args.check_images)
    record["single_ready_s"] = round(single.wait_ready(3600), 1)
    record["single"] = sweep(args, single, images, single_levels)
    single.stop()
    save("single")

    print(f"pure inference ({backend} {precision}) ...", flush=True)
    load0 = loadavg()
    record["pure"] = pure_inference(args, same_backend, same_precision, images, args.max_batch_size)
    record["pure"].update(loadavg_before=load0, loadavg_after=loadavg())
    save("pure")

    variants = variant_flags(args.variants, backend)
    record["variants"] = []
    for flags in variants:
        print(f"variant: serve {' '.join(flags)} ...", flush=True)
        server = Server(args, 1, same_backend, same_precision, args.single_check_images or args.check_images,
                        extra=flags)
        ready = round(server.wait_ready(3600), 1)
        record["variants"].append({"flags": " ".join(flags), "ready_s": ready,
                                   "rows": sweep(args, server, images, [1, 16])})
        server.stop()
        save("variant " + " ".join(flags))
    streams = next((int(f[f.index("--streams") + 1]) for f in variants if "--streams" in f), None)
    if streams:
        print(f"pure inference with {streams} streams ...", flush=True)
        load0 = loadavg()
        record["pure_streams"] = pure_inference(args, same_backend, same_precision, images, 2, streams=streams)
        record["pure_streams"].update(loadavg_before=load0, loadavg_after=loadavg())
    record["loadavg_end"] = loadavg()
    record["acceptance"] = acceptance(record)
    record["contended"] = any(row["loadavg_after"][0] > (os.cpu_count() or 1) + 1  # client + server: ~cores + 1
                              for row in record["batching"] + record["single"])
    save("variants")
    out.with_suffix(".md").write_text(markdown(record))
    print(markdown(record))
    return 0


def variant_flags(spec: str, backend: str) -> list[list[str]]:
    """Serve flags of each extra configuration ('streams' -> OpenVINO streams at batch 1 and 2)."""
    if spec in ("", "none"):
        return []
    if spec == "streams":
        from segdeploy.backends.base import physical_cores

        cores = physical_cores()
        if backend != "openvino" or cores < 2:
            return []
        return [["--streams", str(cores), "--max-batch-size", "1"], ["--streams", str(cores), "--max-batch-size", "2"]]
    return [part.split() for part in spec.split(";") if part.strip()]


def acceptance(record: dict) -> dict:
    def at(rows, c):
        return next((r for r in rows if r["concurrency"] == c), None)

    b16, s16 = at(record["batching"], 16), at(record["single"], 16)
    pure = record["pure"]["best_images_per_s"]
    out: dict = {}
    if b16 and s16:
        out["c16_vs_pure"] = round(b16["throughput_rps"] / pure, 3)
        out["c16_vs_single"] = round(b16["throughput_rps"] / s16["throughput_rps"], 3)
        out["c16_p99_ms"] = b16["p99_ms"]
        out["pass_80pct_of_pure"] = out["c16_vs_pure"] >= 0.8
        out["pass_1_5x_single"] = out["c16_vs_single"] >= 1.5
        # The most any batching server could gain over this one-per-pass server: the best pure
        # inference rate of every configuration measured (no HTTP, no decoding) over its req/s.
        pures = [pure] + ([record["pure_streams"]["best_images_per_s"]] if record.get("pure_streams") else [])
        out["ceiling_vs_single"] = round(max(pures) / s16["throughput_rps"], 3)
        servers = [("batching", b16["throughput_rps"]), ("one-per-pass", s16["throughput_rps"])]
        for variant in record.get("variants", []):
            row = at(variant["rows"], 16)
            if row:
                servers.append((variant["flags"], row["throughput_rps"]))
        out["fastest_c16"] = max(servers, key=lambda kv: kv[1])
    out["soak_rss_growth_pct"] = record["soak"]["rss_growth_pct"]
    out["pass_rss_flat"] = record["soak"]["rss_growth_pct"] < 5
    out["soak_seconds"] = record["soak"]["seconds"]
    return out


def markdown(r: dict) -> str:
    env = r.get("environment", {})
    packages = env.get("packages", {})
    lines = [f"# segdeploy serve load test: {r['model']} ({r['backend']} {r['precision']}, {r['weights']} weights)", "",
             f"Machine: {env.get('cpu')} ({', '.join(env.get('cpu_features') or []) or 'none of AVX2, AVX-512, AMX'}), "
             f"{r['cpu_count']} CPUs; Python {env.get('python')}, "
             + ", ".join(f"{k} {packages.get(k)}" for k in ("segdeploy", "openvino", "onnxruntime", "torch")) + ".", "",
             f"Started {r['started']} on {r['cpu_count']} CPUs; load average at start {r['loadavg_start']}, at end "
             f"{r['loadavg_end']}" + (" — **run under contention** (load above the core count + 1): numbers are "
                                      "noisy and low" if r.get("contended") else "") + ".",
             f"Server: `{r['server_command']}`; fidelity gate: {r['fidelity'].get('status')} "
             f"({r['fidelity'].get('images')} check images).", ""]
    lines += [f"- {note}" for note in r["notes"]]
    lines += ["", "| concurrency | batching req/s | p50 ms | p90 ms | p99 ms | mean batch | RSS MB | one-per-pass req/s "
              "| p50 ms | p99 ms | load (1 min) |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    singles = {row["concurrency"]: row for row in r["single"]}
    for b in r["batching"]:
        s = singles.get(b["concurrency"])
        single = (f"{s['throughput_rps']} | {s['p50_ms']} | {s['p99_ms']} | {b['loadavg_after'][0]} / "
                  f"{s['loadavg_after'][0]}") if s else f"– | – | – | {b['loadavg_after'][0]}"
        lines.append(f"| {b['concurrency']} | {b['throughput_rps']} | {b['p50_ms']} | {b['p90_ms']} | {b['p99_ms']} "
                     f"| {b['mean_batch_size']} | {b['rss_mb']} | {single} |")
    p = r["pure"]
    lines += ["", f"Pure inference (same runtime in-process, `Runtime.run` only): "
              + ", ".join(f"batch {k}: {v} img/s" for k, v in p["images_per_s_by_batch"].items())
              + f"; best {p['best_images_per_s']} img/s at batch {p['best_batch_size']} "
              f"(load {p['loadavg_before'][0]} → {p['loadavg_after'][0]}).", ""]
    s = r["soak"]
    lines += [f"Soak: concurrency 8 for {s['seconds']:g} s, {s['requests']} requests, {s['throughput_rps']} req/s, "
              f"p99 {s['p99_ms']} ms; RSS {s['rss_after_warmup_mb']} MB after warm-up (20 % of the soak) → "
              f"{s['rss_end_mb']} MB at the end ({s['rss_growth_pct']:+.2f} %), max {s['rss_max_mb']} MB.", ""]
    if r.get("variants"):
        lines += ["Other configurations of the same server (same backend and precision), concurrency 1 and 16:", "",
                  "| serve flags | c=1 req/s | c=1 p50 ms | c=16 req/s | c=16 p50 ms | c=16 p99 ms | mean batch | "
                  "RSS MB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for v in r["variants"]:
            one, sixteen = v["rows"][0], v["rows"][-1]
            lines.append(f"| `{v['flags']}` | {one['throughput_rps']} | {one['p50_ms']} | {sixteen['throughput_rps']} "
                         f"| {sixteen['p50_ms']} | {sixteen['p99_ms']} | {sixteen['mean_batch_size']} "
                         f"| {sixteen['rss_mb']} |")
        lines.append("")
    if r.get("pure_streams"):
        ps = r["pure_streams"]
        lines += [f"Pure inference with {ps['calls_in_flight']} streams ({ps['calls_in_flight']} calls in flight): "
                  + ", ".join(f"batch {k}: {v} img/s" for k, v in ps["images_per_s_by_batch"].items()) + ".", ""]
    a = r["acceptance"]
    if "ceiling_vs_single" in a:
        lines += [f"Ceiling: the best pure-inference rate of any configuration measured is "
                  f"{a['ceiling_vs_single']:.2f}× the one-per-pass server's throughput at concurrency 16"
                  + (", so no batching server of this backend can reach 1.5× it on this machine" if
                     a["ceiling_vs_single"] < 1.5 else "") + f". Fastest server at "
                  f"concurrency 16: `{a['fastest_c16'][0]}`, {a['fastest_c16'][1]} req/s.", ""]
    if "c16_vs_pure" in a:
        lines += [f"Acceptance at concurrency 16: {a['c16_vs_pure']:.0%} of pure inference (target ≥ 80 %: "
                  f"{'pass' if a['pass_80pct_of_pure'] else 'FAIL'}), {a['c16_vs_single']:.2f}× the one-per-pass "
                  f"server (target ≥ 1.5×: {'pass' if a['pass_1_5x_single'] else 'FAIL'}), p99 {a['c16_p99_ms']} ms; "
                  f"soak RSS growth {a['soak_rss_growth_pct']:+.2f} % (target < 5 %: "
                  f"{'pass' if a['pass_rss_flat'] else 'FAIL'}) over {a['soak_seconds']:g} s (the issue asks for 600 s)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
