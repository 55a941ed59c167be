"""Benchmark what confirming hostile-but-legal uploads costs the server: 8 concurrent `confirm-upload`s, each of one
40-megapixel PNG of ~130 kB (or `--format jpeg|webp`) (inside the default `max_pixels`; it inflates to 120 MB of pixels).

The benchmark starts its own server (`python app.py`, external runner: nothing is processed) in a temporary data dir,
signs up 8 users, creates and uploads one job each, then posts the 8 confirmations at once while sampling the server's
RSS every 20 ms. It prints the peak RSS growth over the idle server, the RSS 10 s after the last answer, and the
confirm latency; and, measured in the same run for comparison, the RSS growth of a plain Python process that decodes
the same 8 files at once with Pillow (what confirming cost when each upload was decoded in full).

Targets (2 cores): peak growth < 600 MB, memory returned within 10 s.

    python benchmarks/uploads.py [--uploads 8]
"""
from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from api_server import Client, ServerProcess  # noqa: E402

TARGET_GROWTH_MB, TARGET_RETURN_SECONDS = 600, 10
RETURNED_MB = 50  # memory counts as returned once the growth left is under this (or a tenth of the peak)
MB = 2 ** 20


def rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1]) * 1024
    return 0


def big_small_photo(format: str) -> bytes:
    "8000 x 5000 pixels in a few hundred kB: a wall and a floor."
    picture = Image.new("RGB", (8000, 5000), (220, 215, 205))
    picture.paste((120, 90, 60), (0, 3000, 8000, 5000))
    buffer = io.BytesIO()
    picture.save(buffer, format.upper())
    return buffer.getvalue()


class Sampler:
    "The largest RSS of a process, sampled every 20 ms in a thread."
    def __init__(self, pid: int):
        self.pid, self.peak, self._done = pid, rss(pid), threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self):
        while not self._done.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.02)

    def __enter__(self): self._thread.start(); return self
    def __exit__(self, *exc): self._done.set(); self._thread.join()


NAIVE = """
import io, sys, threading
from PIL import Image
data = open(sys.argv[1], "rb").read()
def decode(): Image.open(io.BytesIO(data)).convert("RGB").load()
threads = [threading.Thread(target=decode) for _ in range(int(sys.argv[2]))]
print("ready", flush=True); sys.stdin.readline()
for t in threads: t.start()
for t in threads: t.join()
print("done", flush=True); sys.stdin.readline()
"""


def naive_growth(photo_path: Path, uploads: int) -> int:
    "RSS growth of a process decoding `uploads` copies of the file at once in full."
    process = subprocess.Popen([sys.executable, "-c", NAIVE, str(photo_path), str(uploads)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    process.stdout.readline()
    baseline = rss(process.pid)
    with Sampler(process.pid) as sampler:
        process.stdin.write("\n"); process.stdin.flush()
        process.stdout.readline()
    process.stdin.write("\n"); process.stdin.flush()
    process.wait()
    return sampler.peak - baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--format", choices=("png", "jpeg", "webp"), default="png",
                        help="png: verified by streaming; jpeg: decoded at 1/8 scale; webp: decoded in full, two at a time")
    args = parser.parse_args()
    photo = big_small_photo(args.format)
    content_type = f"image/{args.format}"
    with tempfile.TemporaryDirectory() as folder:
        photo_path = Path(folder) / f"big.{args.format}"
        photo_path.write_bytes(photo)
        server = ServerProcess(Path(folder) / "data", {"S3LIB_RUNNER": "external", "S3LIB_LIMITS_SIGNUPS_PER_MINUTE": "1000"}).start()
        try:
            jobs = []
            for _ in range(args.uploads):
                user = Client(server.url).sign_up()
                job = user.create_job([photo], content_type=content_type)
                user.upload(job, [photo])
                jobs.append((user, job["id"]))
            time.sleep(1)
            pid = server.process.pid
            baseline = rss(pid)

            def confirm(pair):
                started = time.perf_counter()
                answer = pair[0].post(f"/jobs/{pair[1]}/confirm-upload")
                assert answer.status_code == 200, answer.text
                return time.perf_counter() - started
            with Sampler(pid) as sampler, ThreadPoolExecutor(args.uploads) as pool:
                latencies = list(pool.map(confirm, jobs))
            finished = time.monotonic()
            returned_after = None
            while time.monotonic() - finished < TARGET_RETURN_SECONDS + 5:
                if rss(pid) - baseline <= max(RETURNED_MB * MB, 0.1 * (sampler.peak - baseline)):
                    returned_after = time.monotonic() - finished
                    break
                time.sleep(0.1)
            after = rss(pid) - baseline
        finally:
            server.stop()
        naive = naive_growth(photo_path, args.uploads)
    growth = sampler.peak - baseline
    print(f"{args.uploads} concurrent confirm-uploads of one {len(photo) / 1000:.0f} kB 8000x5000 {args.format.upper()} each")
    print(f"  server RSS idle            {baseline / MB:8.0f} MB")
    print(f"  peak growth                {growth / MB:8.0f} MB   (target < {TARGET_GROWTH_MB} MB: "
          f"{'met' if growth < TARGET_GROWTH_MB * MB else 'MISSED'})")
    print(f"  growth left after answers  {after / MB:8.0f} MB   returned within "
          + (f"{returned_after:.1f} s (target {TARGET_RETURN_SECONDS} s: {'met' if returned_after <= TARGET_RETURN_SECONDS else 'MISSED'})"
             if returned_after is not None else f"> {TARGET_RETURN_SECONDS + 5} s (MISSED)"))
    print(f"  confirm latency            median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    print(f"  full Pillow decodes, same files at once: {naive / MB:.0f} MB growth "
          f"({naive / max(growth, MB):.1f}x the server's peak growth)")


if __name__ == "__main__":
    main()
