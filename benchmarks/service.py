"""Benchmark the REST service over loopback HTTP: signed callbacks per second and job status reads per second,
with p50/p99 latency, at 32 concurrent clients.

The benchmark starts its own server (`python app.py`, external runner: items are only queued, so this
process plays the workers) in a temporary data dir, signs up one user on a plan with room for the load, and
creates JOBS jobs of ITEMS photos. Then:

1. callbacks: 32 clients post every item's `running` and `done` reports, each a correctly signed Standard
   Webhooks callback that goes through signature check, de-duplication, the state change and (for `done`) the
   charge — the result objects are written into the local store first, as a worker would upload them. Half
   of them back to back (the throughput), half paced at the 100/s target (the latency a worker sees then);
2. reads: 32 clients read `GET /jobs/{id}` of the finished jobs (10 items, 10 fresh download URLs each) for
   DURATION seconds back to back (the throughput), then DURATION seconds paced together at the 300/s target.

Back to back, 32 clients always wait 32 / throughput on average (Little's law), so the p99 target is judged
on the paced phases and the rate targets on the closed-loop ones.

The client is a few lines of asyncio HTTP/1.1 with keep-alive, so it leaves the CPU to the server (on a
2-core machine both share it). Bounded: JOBS x ITEMS x 2 callbacks and 2 x DURATION seconds of reads.

Targets (issue #3, 2 cores): >= 300 reads/s, >= 100 callbacks/s, p99 < 50 ms.

    python benchmarks/service.py [--duration 10] [--jobs 40] [--items 10] [--clients 32]
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from s3lib.auth import sign_callback  # noqa: E402
from s3lib.core import load_settings  # noqa: E402
from s3lib.storage import LocalStore  # noqa: E402
from s3lib.server import store_signing_secret  # noqa: E402

JWT_SECRET = "benchmark-jwt-secret-0123456789-abcdefghij"
CALLBACK_SECRET = "benchmark-callback-secret-9876543210-zyxwv"
TARGET_READS, TARGET_CALLBACKS, TARGET_P99_MS = 300, 100, 50


# ---- a minimal keep-alive HTTP/1.1 client ------------------------------------------------------------------
class Connection:
    "One keep-alive connection; `request` sends one request and reads the whole response."
    def __init__(self, port: int): self.port, self.reader, self.writer = port, None, None

    async def request(self, method: str, path: str, headers: dict | None = None, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None: self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length": length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self):
        if self.writer is not None: self.writer.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * (len(ordered) - 1) + 0.5))] if ordered else float("nan")


# ---- the server ------------------------------------------------------------------------------------------
def start_server(data_dir: Path, jobs: int, items: int) -> tuple[subprocess.Popen, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "S3LIB_HOST": "127.0.0.1", "S3LIB_PORT": str(port), "S3LIB_DATA_DIR": str(data_dir), "S3LIB_RUNNER": "external",
           "S3LIB_JWT_SECRET": JWT_SECRET, "S3LIB_CALLBACK_SECRET": CALLBACK_SECRET,
           "S3LIB_SETTINGS": str(ROOT / "settings.ini"), "S3LIB_LIMITS_JOBS_PER_MINUTE": str(jobs + 10),
           "S3LIB_PLAN_FREE_MAX_BATCH": str(items), "S3LIB_PLAN_FREE_MAX_CONCURRENT_JOBS": str(jobs),
           "S3LIB_PLAN_FREE_CREDITS_AT_SIGNUP": str(jobs * items)}
    log = open(data_dir / "server.log", "ab")
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None: sys.exit(f"the server exited; see {data_dir / 'server.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2): return server, port
        except OSError: time.sleep(0.1)
    server.kill()
    sys.exit("the server did not start within 90 s")


def photo() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (180, 90, 40)).save(buffer, "PNG")
    return buffer.getvalue()


async def prepare(port: int, jobs: int, items: int, store: LocalStore) -> tuple[dict, list[tuple[str, str, int, str]]]:
    "Sign up, create/upload/confirm/execute the jobs, write their result objects; (auth headers, [(webhook id, job, item, body)])."
    connection = Connection(port)
    status, body = await connection.request("POST", "/auth/anon")
    assert status == 201, body
    signed_up = json.loads(body)
    auth = {"Authorization": f"Bearer {signed_up['token']}"}
    user_id, picture = signed_up["user"]["id"], photo()
    json_headers = auth | {"Content-Type": "application/json"}
    callbacks = []
    for _ in range(jobs):
        request = {"domain": "interior", "rule": {"edits": [{"concept": "wall", "action": "recolor", "color": "#EDE6DA"}]},
                   "items": [{"filename": f"{i}.png", "content_type": "image/png", "size": len(picture)} for i in range(items)]}
        status, body = await connection.request("POST", "/jobs", json_headers, json.dumps(request).encode())
        assert status == 201, body
        job = json.loads(body)
        for upload in job["uploads"]:
            path = upload["url"].split(f":{port}", 1)[1]
            status, body = await connection.request("PUT", path, {"Content-Type": upload["headers"]["Content-Type"]}, picture)
            assert status == 200, body
        for action, expected in (("confirm-upload", 200), ("execute", 202)):
            status, body = await connection.request("POST", f"/jobs/{job['id']}/{action}", auth)
            assert status == expected, body
        for item in range(items):
            result_key = f"users/{user_id}/jobs/{job['id']}/results/{item}.png"
            store.put(result_key, picture, "image/png")
            callbacks.append((f"run_{job['id']}_{item}", job["id"], item, json.dumps({"job_id": job["id"], "item": item, "attempt": 1, "status": "running"})))
            callbacks.append((f"end_{job['id']}_{item}", job["id"], item,
                              json.dumps({"job_id": job["id"], "item": item, "attempt": 1, "status": "done", "result_key": result_key})))
    connection.close()
    callbacks.sort(key=lambda c: (c[2], c[0].startswith("end")))  # every item's running before its done, jobs interleaved
    return auth, callbacks


# ---- the load ----------------------------------------------------------------------------------------------
async def run_callbacks(port: int, callbacks: list, clients: int, rate: float | None = None) -> tuple[float, list[float]]:
    "Post the signed callbacks from `clients` clients: back to back, or together at `rate` per second."
    queue, latencies = list(reversed(callbacks)), []
    async def client(number: int):
        connection = Connection(port)
        interval = clients / rate if rate else 0.0
        next_at = time.perf_counter() + number * interval / clients
        while queue:
            if rate:
                if next_at > time.perf_counter(): await asyncio.sleep(next_at - time.perf_counter())
                next_at += interval
                if not queue: break
            webhook_id, job_id, _, body = queue.pop()
            raw = body.encode()
            started = time.perf_counter()
            status, answer = await connection.request("POST", f"/jobs/{job_id}/callback",
                                                      sign_callback(raw, CALLBACK_SECRET, msg_id=webhook_id), raw)
            latencies.append(time.perf_counter() - started)
            assert status == 200 and b'"duplicate":false' in answer, answer  # a running report may lose the race to its done
        connection.close()
    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return time.perf_counter() - started, latencies


async def run_reads(port: int, auth: dict, job_ids: list[str], clients: int, duration: float,
                    rate: float | None = None) -> tuple[float, list[float]]:
    "GET /jobs/{id} from `clients` clients for `duration` seconds: back to back, or together at `rate` per second."
    latencies, stop = [], time.perf_counter() + duration
    async def client(number: int):
        connection = Connection(port)
        interval = clients / rate if rate else 0.0
        next_at = time.perf_counter() + (number * interval / clients if rate else 0.0)
        count = 0
        while (now := time.perf_counter()) < stop:
            if rate:
                if next_at > now: await asyncio.sleep(next_at - now)
                next_at += interval
            started = time.perf_counter()
            status, answer = await connection.request("GET", f"/jobs/{job_ids[(number + count) % len(job_ids)]}", auth)
            latencies.append(time.perf_counter() - started)
            assert status == 200, answer
            count += 1
        connection.close()
    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return time.perf_counter() - started, latencies


def cpu_seconds(pid: int) -> float:
    "User + system CPU time a process has used so far (Linux), or NaN."
    try: fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError: return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(server: subprocess.Popen, phase) -> tuple[float, list[float], float]:
    "Run one load phase; (seconds, latencies, server CPU seconds used meanwhile)."
    before = cpu_seconds(server.pid)
    seconds, latencies = asyncio.run(phase)
    return seconds, latencies, cpu_seconds(server.pid) - before


def report(name: str, seconds: float, latencies: list[float], cpu: float, target: float | None) -> bool:
    "Print one phase; judge its rate against `target` (a closed-loop phase) or its p99 (a paced phase, `target` None)."
    count = len(latencies)
    rate, p50, p99 = count / seconds, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    if target is not None: verdict, ok = f"{'ok' if rate >= target else 'BELOW'}: target {target}/s", rate >= target
    else: verdict, ok = f"{'ok' if p99 < TARGET_P99_MS else 'ABOVE'}: target p99 < {TARGET_P99_MS} ms", p99 < TARGET_P99_MS
    print(f"{name:<36} {count:>5} in {seconds:5.1f} s = {rate:6.1f}/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   "
          f"server CPU {cpu / count * 1000:5.2f} ms each   ({verdict})")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each read phase")
    parser.add_argument("--jobs", type=int, default=40, help="jobs to create (each gets one running and one done callback per item)")
    parser.add_argument("--items", type=int, default=10, help="photos per job")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="s3lib-bench-") as folder:
        data_dir = Path(folder)
        server, port = start_server(data_dir, args.jobs, args.items)
        try:
            settings = load_settings(env={"S3LIB_JWT_SECRET": JWT_SECRET})
            store = LocalStore(data_dir / "storage", f"http://127.0.0.1:{port}", store_signing_secret(settings))
            started = time.perf_counter()
            auth, callbacks = asyncio.run(prepare(port, args.jobs, args.items, store))
            job_ids = sorted({job_id for _, job_id, _, _ in callbacks})
            print(f"server on 127.0.0.1:{port}; {len(job_ids)} jobs × {args.items} items prepared in "
                  f"{time.perf_counter() - started:.1f} s; {args.clients} concurrent clients, {os.cpu_count()} CPUs")
            half = len(callbacks) // 2
            ok = report("signed callbacks, closed loop", *measure(server, run_callbacks(port, callbacks[:half], args.clients)),
                        TARGET_CALLBACKS)
            ok &= report(f"signed callbacks at {TARGET_CALLBACKS}/s",
                         *measure(server, run_callbacks(port, callbacks[half:], args.clients, rate=TARGET_CALLBACKS)), None)
            ok &= report(f"status reads ({args.items} items), closed loop",
                         *measure(server, run_reads(port, auth, job_ids, args.clients, args.duration)), TARGET_READS)
            ok &= report(f"status reads at {TARGET_READS}/s",
                         *measure(server, run_reads(port, auth, job_ids, args.clients, args.duration, rate=TARGET_READS)), None)
            print(f"load average during the run: {os.getloadavg()[0]:.1f} (other work on this machine slows every number)")
        finally:
            server.send_signal(signal.SIGTERM)
            try: server.wait(60)
            except subprocess.TimeoutExpired: server.kill()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
