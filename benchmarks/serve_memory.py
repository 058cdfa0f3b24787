"""Memory under load: ``segdeploy serve`` with a memory budget against concurrent uploads that are
each inside every per-request limit but large once decoded.

    python benchmarks/serve_memory.py                    # 80 concurrent 6000x6000 PNGs, --max-inflight-bytes 2GB
    python benchmarks/serve_memory.py --clients 8 --side 3000 --out /tmp/x.json   # a quick check

Each upload is a generated, compressible 6000 x 6000 PNG (~120 kB on the wire, 36 megapixels,
inside the default --max-pixels of 40 M and --max-body-bytes of 20 MiB). All clients send at
once; a client answered 503 waits for Retry-After and sends again (up to --retries times), so the
run also shows that the server keeps serving while it refuses. The server's RSS is sampled every
20 ms (psutil on its pid) from before the burst to the last answer.

Acceptance (recorded in the result): every answer is 200 or 503, the server process is the same
one at the end and still ready, and its peak RSS stays under the budget + 1 GiB.
Result: benchmarks/results/serve_memory_cpu.json (and .md).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import RESULTS, Server, loadavg  # noqa: E402  (benchmarks are scripts, not a package)

GIB = 2**30


def big_pngs(count: int, side: int) -> list[bytes]:
    """``count`` distinct, compressible side x side RGB PNGs (stripes and blocks, no noise)."""
    from PIL import Image

    yy, xx = np.mgrid[0:side, 0:side]
    out = []
    for seed in range(count):
        image = np.stack([(xx // (16 + seed)) % 256, (yy // 24) % 256,
                          np.full_like(xx, 40 + 20 * seed)], axis=-1).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


class RssSampler:
    """Peak RSS of a process, sampled in a thread."""

    def __init__(self, pid: int, every_s: float = 0.02):
        import psutil

        self.process = psutil.Process(pid)
        self.every_s = every_s
        self.peak = self.process.memory_info().rss
        self.samples = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except Exception:  # noqa: BLE001 - the process died: the record says so
                return
            self.samples += 1
            time.sleep(self.every_s)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


async def burst(url: str, model: str, bodies: list[bytes], clients: int, retries: int) -> list[dict]:
    import httpx

    async def client(index: int, http) -> dict:
        record = {"first": None, "final": None, "attempts": 0, "seconds": None}
        start = time.perf_counter()
        for attempt in range(retries + 1):
            answer = await http.post(f"/v1/models/{model}/predict", content=bodies[index % len(bodies)])
            record["attempts"] = attempt + 1
            record["first"] = record["first"] or answer.status_code
            record["final"] = answer.status_code
            if answer.status_code != 503:
                break
            await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
        record["seconds"] = round(time.perf_counter() - start, 2)
        return record

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as http:
        return await asyncio.gather(*(client(i, http) for i in range(clients)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="u2netp")
    parser.add_argument("--weights", default="official")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--clients", type=int, default=80)
    parser.add_argument("--side", type=int, default=6000, help="image width = height (default: 6000)")
    parser.add_argument("--distinct", type=int, default=4, help="distinct images cycled over the clients")
    parser.add_argument("--budget", default="2GB", help="--max-inflight-bytes of the server (default: 2GB)")
    parser.add_argument("--retries", type=int, default=200, help="resends of a request answered 503")
    parser.add_argument("--out", default=str(RESULTS / "serve_memory_cpu.json"))
    args = parser.parse_args(argv)

    from segdeploy.core.environment import environment
    from segdeploy.serve.config import parse_bytes

    from segdeploy.serve.admission import decoded_cost

    budget = parse_bytes(args.budget)
    bodies = big_pngs(args.distinct, args.side)
    price = decoded_cost(bodies[0], "upload", args.side * args.side)
    server = Server(SimpleNamespace(model=args.model, weights=args.weights, max_wait_ms=10), max_batch_size=1,
                    backend=args.backend, precision=None, check_images=16,
                    extra=("--max-inflight-bytes", args.budget))
    record: dict = {"environment": environment(), "model": args.model, "weights": args.weights,
                    "backend": args.backend, "clients": args.clients, "image": f"{args.side}x{args.side} PNG",
                    "upload_bytes": [len(b) for b in bodies], "budget_bytes": budget, "price_bytes": price,
                    "admitted_at_once": budget // price, "load_before": loadavg()}
    try:
        record["ready_s"] = round(server.wait_ready(1200), 1)
        pid = server.proc.pid
        record["rss_idle_mb"] = server.rss_mb()
        with RssSampler(pid) as sampler:
            start = time.perf_counter()
            answers = asyncio.run(burst(server.url, args.model, bodies, args.clients, args.retries))
            record["burst_s"] = round(time.perf_counter() - start, 1)
        import httpx

        models = httpx.get(server.url + "/v1/models", timeout=30).json()
        record["server_budget"] = models["config"]["max_inflight_bytes"]
        record["still_ready"] = httpx.get(server.url + "/readyz", timeout=30).status_code == 200
        record["same_process"] = server.proc.poll() is None and server.proc.pid == pid
        record["rss_peak_mb"] = round(sampler.peak / 2**20, 1)
        record["rss_samples"] = sampler.samples
        record["first_answers"] = {str(k): sum(a["first"] == k for a in answers) for k in sorted({a["first"] for a in answers})}
        record["final_answers"] = {str(k): sum(a["final"] == k for a in answers) for k in sorted({a["final"] for a in answers})}
        record["attempts"] = sum(a["attempts"] for a in answers)
        record["client_seconds_max"] = max(a["seconds"] for a in answers)
    finally:
        record["load_after"] = loadavg()
        record["server_exit"] = server.stop()
    statuses = set(record.get("first_answers", {})) | set(record.get("final_answers", {}))
    record["acceptance"] = {
        "only_200_or_503": statuses <= {"200", "503"},
        "no_restart": bool(record.get("same_process") and record.get("still_ready")),
        "peak_rss_under_budget_plus_1gib": record.get("rss_peak_mb", float("inf")) * 2**20 < budget + GIB,
    }
    Path(args.out).write_text(json.dumps(record, indent=2))
    Path(args.out).with_suffix(".md").write_text(markdown(record))
    print(json.dumps({k: record.get(k) for k in ("first_answers", "final_answers", "rss_idle_mb", "rss_peak_mb",
                                                 "burst_s", "acceptance")}, indent=2))
    return 0 if all(record["acceptance"].values()) else 1


def markdown(r: dict) -> str:
    env = r.get("environment", {})
    machine = env.get("cpu") or env.get("machine") or "this machine"
    return "\n".join([
        f"# serve memory under load: {r['clients']} concurrent {r['image']} uploads",
        "",
        f"Machine: {machine}; load average before {r['load_before']}, after {r['load_after']}.",
        f"Server: `segdeploy serve {r['model']} --weights {r['weights']} --backend {r['backend']} "
        f"--max-batch-size 1 --max-inflight-bytes {r['budget_bytes'] / 1e9:g}GB`; uploads of "
        f"{min(r['upload_bytes']) // 1000}-{max(r['upload_bytes']) // 1000} kB each.",
        "",
        "| measure | value |", "|---|---|",
        f"| first answers | {r.get('first_answers')} |",
        f"| final answers (503 retried after Retry-After) | {r.get('final_answers')} |",
        f"| requests sent | {r.get('attempts')} |",
        f"| burst duration | {r.get('burst_s')} s |",
        f"| price of one upload / admitted at once | {r['price_bytes'] / 2**20:.0f} MiB / {r['admitted_at_once']} |",
        f"| server RSS idle / peak | {r.get('rss_idle_mb')} / {r.get('rss_peak_mb')} MiB |",
        f"| budget + 1 GiB | {(r['budget_bytes'] + GIB) / 2**20:.0f} MiB |",
        f"| same process, still ready | {r.get('same_process')}, {r.get('still_ready')} |",
        "",
        f"Acceptance: {r.get('acceptance')}",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
