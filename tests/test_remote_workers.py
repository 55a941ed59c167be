"""Remote GPU workers that pull: a real coordinator process (external runner, S3 storage on nanio) and two
`s3lib worker --server URL` processes with the tiny SAM 3. First a plain batch shared by both workers, then fault
injection: kill -9 of a random party (the coordinator or a worker) at random moments, many times, each restarted at
once, with the books checked after every round and everything checked at the end.

S3LIB_FAULT_KILLS sets the number of kills (default 25, about two minutes on 2 cores; 50 or 500 for heavier runs); S3LIB_FAULT_SEED the seed."""
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config

from api_server import CALLBACK_SECRET, FINISHED, ROOT, Client, ServerProcess, png_bytes
from conftest import NANIO_ACCESS_KEY, NANIO_SECRET_KEY
from s3lib.ledger import Ledger

pytestmark = [pytest.mark.scale, pytest.mark.timeout(900)]

KILLS = int(os.environ.get("S3LIB_FAULT_KILLS", "25"))
SEED = int(os.environ.get("S3LIB_FAULT_SEED", str(random.SystemRandom().randrange(10**6))))
RULE = {"edits": [{"concept": "wall", "action": "recolor", "color": "#9CAF88"}], "protect": ["person"]}
CREDITS_AT_SIGNUP = 30


def coordinator(data_dir: Path, endpoint: str, tiny_sam3: Path, bucket: str, port: int | None = None) -> ServerProcess:
    return ServerProcess(data_dir, {
        "S3LIB_RUNNER": "external", "S3LIB_RUNNER_LEASE_SECONDS": "5", "S3LIB_JOBS_MAX_ATTEMPTS": "50",
        "S3LIB_MODEL": str(tiny_sam3), "S3LIB_STORAGE_BACKEND": "s3",
        "S3LIB_STORAGE_ENDPOINT_URL": endpoint, "S3LIB_STORAGE_BUCKET": bucket, "S3LIB_STORAGE_ACCESS_KEY": NANIO_ACCESS_KEY,
        "S3LIB_STORAGE_SECRET_KEY": NANIO_SECRET_KEY, "S3LIB_PLAN_FREE_MAX_CONCURRENT_JOBS": "4",
        "S3LIB_LIMITS_JOBS_PER_MINUTE": "1000", "S3LIB_LIMITS_SIGNUPS_PER_MINUTE": "1000"}, port=port)


class Worker:
    "`python -m s3lib worker --server URL` with the coordinator's callback secret and the tiny model; log in `log_path`."
    def __init__(self, name: str, server_url: str, tiny_sam3: Path, folder: Path):
        self.name, self.server_url, self.tiny_sam3, self.log_path = name, server_url, tiny_sam3, folder / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Worker":
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "S3LIB_CALLBACK_SECRET": CALLBACK_SECRET, "S3LIB_JWT_SECRET": "worker-needs-no-jwt-secret-but-settings-want-one-0123",
               "S3LIB_MODEL": str(self.tiny_sam3), "S3LIB_DATA_DIR": str(self.log_path.parent),
               "S3LIB_SETTINGS": str(ROOT / "settings.ini")}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "s3lib", "worker", "--server", self.server_url, "--wait", "2"],
                                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try: self.process.wait(30)
            except subprocess.TimeoutExpired: self.kill()

    def tasks_done(self) -> int:
        return self.log_path.read_text(errors="replace").count(": done") if self.log_path.exists() else 0


@pytest.fixture
def bucket(nanio_endpoint):
    "A fresh bucket per test (the coordinator creates it)."
    return f"s3lib-remote-{uuid.uuid4().hex[:10]}"


def s3_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=NANIO_ACCESS_KEY, aws_secret_access_key=NANIO_SECRET_KEY,
                        region_name="us-east-1", config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))


def wait_until_finished(user: Client, job_ids: list[str], timeout: float) -> list[dict]:
    deadline, statuses = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        for job_id in job_ids:
            if statuses.get(job_id, {}).get("status") not in FINISHED:
                try: statuses[job_id] = user.get(f"/jobs/{job_id}").json()
                except httpx.TransportError: pass
        if all(s.get("status") in FINISHED for s in statuses.values()) and len(statuses) == len(job_ids):
            return [statuses[j] for j in job_ids]
        time.sleep(0.3)
    raise AssertionError(f"jobs not finished within {timeout} s: {[(j, statuses.get(j, {}).get('progress')) for j in job_ids]}")


def test_two_remote_workers_share_a_batch(tmp_path, nanio_endpoint, tiny_sam3, bucket):
    server = coordinator(tmp_path / "data", nanio_endpoint, tiny_sam3, bucket).start()
    workers = [Worker(f"worker-{i}", server.url, tiny_sam3, tmp_path).start() for i in range(2)]
    try:
        user = Client(server.url).sign_up()
        job_ids = []
        for _ in range(2):
            job_id = user.uploaded_job([png_bytes(48, 32, color=(40 * i, 90, 140)) for i in range(5)], rule=RULE)
            assert user.post(f"/jobs/{job_id}/execute").status_code == 202
            job_ids.append(job_id)
        charged = 0
        for status in wait_until_finished(user, job_ids, 240):
            unchanged = status["progress"]["unchanged"]  # photos no edit changed are not charged
            assert (status["status"], status["progress"]["done"], status["credits_charged"], status["credits_refunded"]) == \
                ("done", 5, 5 - unchanged, unchanged), status
            charged += 5 - unchanged
            for item in status["items"]:
                assert httpx.get(item["result_url"]).content.startswith(b"\x89PNG")
        assert user.me()["credits"] == CREDITS_AT_SIGNUP - charged
        assert all(worker.tasks_done() > 0 for worker in workers), [w.log_path.read_text(encoding="utf-8", errors="replace")[-2000:] for w in workers]
    finally:
        for worker in workers: worker.stop()
        assert server.stop(), server.log_tail()


def check_ledger(data_dir: Path, s3, bucket: str) -> dict:
    "With the coordinator down: the books balance, no item is charged twice or without being done, no result is lost."
    ledger = Ledger(data_dir / "s3lib.duckdb")
    try:
        assert ledger.balance_errors() == []
        twice = ledger.rows("SELECT job_id, item, count(*) AS n FROM credit_entries WHERE kind = 'charge' GROUP BY 1, 2 HAVING n > 1")
        assert twice == [], twice
        charged_not_done = ledger.rows("SELECT e.job_id, e.item FROM credit_entries e JOIN items i ON i.job_id = e.job_id "
                                       "AND i.item = e.item WHERE e.kind = 'charge' AND i.status <> 'done'")
        assert charged_not_done == [], charged_not_done
        done = ledger.rows("SELECT result_key FROM items WHERE status = 'done'")
        for row in done: s3.head_object(Bucket=bucket, Key=row["result_key"])  # raises if a result object is lost
        per_user = ledger.rows("SELECT u.id, u.credits, coalesce(sum(e.delta), 0) AS total FROM users u "
                               "LEFT JOIN credit_entries e ON e.user_id = u.id GROUP BY 1, 2")
        assert all(row["credits"] == row["total"] for row in per_user)
        refunded_too_much = ledger.rows(
            "SELECT job_id FROM credit_entries GROUP BY job_id HAVING sum(CASE WHEN kind = 'reserve' THEN credits ELSE 0 END) "
            "< sum(CASE WHEN kind IN ('charge', 'refund') THEN credits ELSE 0 END)")
        assert refunded_too_much == [], refunded_too_much
        lost = ledger.value(  # over finished jobs: what was reserved and neither charged nor refunded
            "SELECT coalesce(sum(abs(held)), 0) FROM (SELECT sum(CASE WHEN e.kind = 'reserve' THEN e.credits WHEN e.kind IN "
            "('charge', 'refund') THEN -e.credits ELSE 0 END) AS held FROM credit_entries e JOIN jobs j ON j.id = e.job_id "
            "WHERE j.status IN ('done', 'failed', 'canceled', 'expired') GROUP BY e.job_id)")
        return {"done_items": len(done), "jobs": ledger.value("SELECT count(*) FROM jobs"), "credits_lost": lost}
    finally:
        ledger.close()


def consistent_books(user: Client, tries: int = 20) -> tuple[list, int]:
    "The user's jobs and balance as one snapshot: jobs, balance, jobs again, until no job's credits moved in between (a worker "
    "that survived a kill may finish an item, and refund, between two reads)."
    credits_of = lambda jobs: [(j["id"], j["credits_reserved"], j["credits_charged"], j["credits_refunded"]) for j in jobs]
    for _ in range(tries):
        before = user.get("/jobs", params={"limit": 200}).json()
        credits = user.me()["credits"]
        after = user.get("/jobs", params={"limit": 200}).json()
        if credits_of(before) == credits_of(after): return after, credits
        time.sleep(0.2)
    raise AssertionError(f"the books kept moving for {tries} reads")


def check_books_over_http(users: list[Client]) -> None:
    "With the coordinator up: each balance is sign-up credits minus what the user's jobs reserved plus what they refunded."
    for user in users:
        jobs, credits = consistent_books(user)
        assert credits == CREDITS_AT_SIGNUP - sum(j["credits_reserved"] - j["credits_refunded"] for j in jobs)
        for job in jobs:
            assert job["credits_charged"] <= job["progress"]["done"] * 1, job
            if job["status"] in FINISHED:
                assert job["credits_charged"] + job["credits_refunded"] == job["credits_reserved"], job


def start_job(user: Client, photos: int, chance: random.Random) -> str | None:
    "Create, upload, confirm and execute a job; None if the coordinator went down meanwhile (that job is left as it is)."
    try:
        job_id = user.uploaded_job([png_bytes(48, 32, color=(chance.randrange(256), 90, 140)) for _ in range(photos)], rule=RULE)
        answer = user.post(f"/jobs/{job_id}/execute")
        return job_id if answer.status_code == 202 else None
    except (httpx.TransportError, AssertionError):
        return None


def test_kill_any_party_at_any_moment(tmp_path, nanio_endpoint, tiny_sam3, bucket):
    chance = random.Random(SEED)
    s3 = s3_client(nanio_endpoint)
    server = coordinator(tmp_path / "data", nanio_endpoint, tiny_sam3, bucket).start()
    workers = [Worker(f"worker-{i}", server.url, tiny_sam3, tmp_path).start() for i in range(2)]
    users = [Client(server.url).sign_up() for _ in range(3)]
    jobs: list[tuple[Client, str]] = []
    kills = {"coordinator": 0, "worker": 0}
    started = time.monotonic()
    try:
        for round_number in range(KILLS):
            user = chance.choice(users)
            if chance.random() < 0.5 and server.process.poll() is None:
                job_id = start_job(user, chance.randint(1, 3), chance)
                if job_id: jobs.append((user, job_id))
            time.sleep(chance.uniform(0.2, 2.0))
            victim = chance.choice(["coordinator", "worker", "worker"])
            kills[victim] += 1
            if victim == "coordinator":
                server.kill()
                check_ledger(server.data_dir, s3, bucket)
                server = coordinator(server.data_dir, nanio_endpoint, tiny_sam3, bucket, port=server.port).start()
            else:
                worker = chance.choice(workers)
                worker.kill()
                worker.start()
            check_books_over_http(users)
        # every job ends: no more kills, the workers finish what is left
        finished = [wait_until_finished(user, [job_id], 300)[0] for user, job_id in jobs]
        check_books_over_http(users)
    finally:
        for worker in workers: worker.stop()
        stopped = server.stop()
    assert stopped, server.log_tail()
    totals = check_ledger(server.data_dir, s3, bucket)
    assert "Traceback" not in server.log_path.read_text(errors="replace"), server.log_tail()
    figures = {"seed": SEED, "kills": kills, "jobs": len(jobs), "jobs_done": sum(s["status"] == "done" for s in finished),
               "items_done": totals["done_items"], "credits_lost": totals["credits_lost"], "seconds": round(time.monotonic() - started)}
    print("fault injection:", json.dumps(figures))
    (ROOT / "artifacts").mkdir(exist_ok=True)
    (ROOT / "artifacts" / "fault_injection.json").write_text(json.dumps(figures, indent=2))
    assert figures["credits_lost"] == 0 and len(jobs) >= KILLS // 4 and figures["jobs_done"] >= 1, figures
