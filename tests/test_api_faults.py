"""Concurrency and faults over real HTTP: 50 concurrent creates and executes from one user, 1,000 signed callbacks
(duplicated, reordered, some after cancel) with exact charges and refunds, and kill -9 of the server mid-job."""
import io
import json
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from api_server import CALLBACK_SECRET, Client, ServerProcess, error_of, png_bytes
from s3lib.auth import sign_callback
from s3lib.ledger import Ledger
from s3lib.storage import LocalStore

pytestmark = pytest.mark.timeout(900)

MAX_CONCURRENT_JOBS = 3  # the free plan's limit on the external-runner server (the default is 1: too small to race)
PHOTO = png_bytes(40, 30)
RESULT = png_bytes(40, 30, color=(230, 230, 230))


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    "A server whose items are only queued (runner external): the tests play the workers through the callback route."
    server = ServerProcess(tmp_path_factory.mktemp("faults") / "data", {
        "S3LIB_RUNNER": "external", "S3LIB_PLAN_FREE_MAX_CONCURRENT_JOBS": str(MAX_CONCURRENT_JOBS),
        "S3LIB_LIMITS_JOBS_PER_MINUTE": "1000", "S3LIB_LIMITS_SIGNUPS_PER_MINUTE": "1000"}).start()
    yield server
    server.stop()
    assert "Traceback" not in server.log_path.read_text(encoding="utf-8", errors="replace"), server.log_tail()


def balance_from_jobs(client: Client) -> int:
    "What the balance must be if it is the sum of the ledger: sign-up credits minus reserved plus refunded, over the user's jobs."
    jobs = client.get("/jobs", params={"limit": 200}).json()
    return 30 - sum(job["credits_reserved"] - job["credits_refunded"] for job in jobs)


def metric(server: ServerProcess, name: str, **labels) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{re.escape(name)}{{{re.escape(selector)}}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_fifty_concurrent_creates_and_executes(external):
    user = Client(external.url).sign_up()
    body = {"domain": "interior", "rule": {"edits": [{"concept": "wall", "action": "recolor", "color": "#EDE6DA"}]},
            "items": [{"filename": "room.png", "content_type": "image/png", "size": len(PHOTO)}]}

    def post_job(key: str | None):
        with httpx.Client(base_url=external.url, headers=user.auth | ({"Idempotency-Key": key} if key else {}), timeout=60) as http:
            barrier.wait()
            return http.post("/jobs", json=body)

    # 50 creates at once with one Idempotency-Key: one job, fifty identical answers
    barrier = threading.Barrier(50, timeout=120)
    with ThreadPoolExecutor(50) as pool: same_key = list(pool.map(post_job, ["same-key"] * 50))
    assert {answer.status_code for answer in same_key} == {201}, [a.text for a in same_key if a.status_code != 201][:3]
    assert len({answer.text for answer in same_key}) == 1
    # 50 creates at once without: fifty jobs
    barrier = threading.Barrier(50, timeout=120)
    with ThreadPoolExecutor(50) as pool: created = list(pool.map(post_job, [None] * 50))
    assert {answer.status_code for answer in created} == {201}, [a.text for a in created if a.status_code != 201][:3]
    jobs = [answer.json() for answer in created]
    assert len({job["id"] for job in jobs}) == 50
    assert len(user.get("/jobs", params={"limit": 200}).json()) == 51

    for job in jobs:
        user.upload(job, [PHOTO])
        assert user.post(f"/jobs/{job['id']}/confirm-upload").status_code == 200

    def execute(job_id: str):
        with httpx.Client(base_url=external.url, headers=user.auth, timeout=60) as http:
            barrier.wait()
            return job_id, http.post(f"/jobs/{job_id}/execute")

    barrier = threading.Barrier(50, timeout=120)
    with ThreadPoolExecutor(50) as pool: executed = list(pool.map(execute, [job["id"] for job in jobs]))
    accepted = [job_id for job_id, answer in executed if answer.status_code == 202]
    refused = [answer for _, answer in executed if answer.status_code != 202]
    assert len(accepted) == MAX_CONCURRENT_JOBS, [answer.text for _, answer in executed][:5]
    assert {error_of(answer) for answer in refused} == {(429, "concurrency_limit")}
    me = user.me()
    assert (me["active_jobs"], me["credits"]) == (MAX_CONCURRENT_JOBS, 30 - MAX_CONCURRENT_JOBS)
    assert me["credits"] == balance_from_jobs(user) >= 0
    statuses = {job["id"]: job["status"] for job in user.get("/jobs", params={"limit": 200}).json()}
    assert sorted(job_id for job_id, status in statuses.items() if status == "queued") == sorted(accepted)

    for job_id in accepted:  # cancel frees the slots and refunds everything
        assert user.post(f"/jobs/{job_id}/cancel").json()["credits_refunded"] == 1
    me = user.me()
    assert (me["active_jobs"], me["credits"]) == (0, 30) and me["credits"] == balance_from_jobs(user)


def test_thousand_callbacks(external):
    "12 jobs × 10 items; 1,000 signed callbacks (240 distinct, the rest duplicates), shuffled, 3 jobs canceled half-way."
    chance = random.Random(7)
    store = LocalStore(external.data_dir / "storage", external.url, "a-test-store-that-only-writes-results-0123")
    users = [Client(external.url).sign_up() for _ in range(4)]
    jobs = []  # (user, job id)
    for user in users:
        for _ in range(MAX_CONCURRENT_JOBS):
            job_id = user.uploaded_job([PHOTO] * 10)
            assert user.post(f"/jobs/{job_id}/execute").status_code == 202
            jobs.append((user, job_id))
    assert all(user.me()["credits"] == 0 for user in users)
    canceled = {job_id for _, job_id in jobs[::4]}  # one job of three users
    outcome = {(job_id, item): "done" if chance.random() < 0.8 else "failed" for _, job_id in jobs for item in range(10)}

    messages = {}  # webhook id -> (job id, body)
    for user, job_id in jobs:
        for item in range(10):
            messages[f"run-{job_id}-{item}"] = (job_id, {"item": item, "status": "running"})
            final = {"item": item, "status": outcome[job_id, item]}
            if final["status"] == "done":
                final["result_key"] = f"users/{user.user['id']}/jobs/{job_id}/results/{item}.png"
                store.put(final["result_key"], RESULT, "image/png")  # what a worker uploads before it reports done
            else:
                final["error"] = f"worker could not process item {item}"
            messages[f"end-{job_id}-{item}"] = (job_id, final)
    before_cancel = [m for m, (job_id, body) in messages.items() if job_id in canceled and body["item"] < 5]
    phase_one = before_cancel + [chance.choice(before_cancel) for _ in range(30)]
    phase_two = [m for m in messages if m not in before_cancel]
    phase_two += [chance.choice(list(messages)) for _ in range(1000 - len(phase_one) - len(phase_two))]
    chance.shuffle(phase_one)
    chance.shuffle(phase_two)
    assert len(messages) == 240 and len(phase_one) + len(phase_two) == 1000

    duplicates_before = metric(external, "s3lib_callbacks_total", outcome="duplicate")
    answers: dict[str, list] = {m: [] for m in messages}

    def send(webhook_id: str):
        job_id, body = messages[webhook_id]
        raw = json.dumps({"job_id": job_id, "attempt": 1} | body).encode()
        answer = http.post(f"/jobs/{job_id}/callback", content=raw, headers=sign_callback(raw, CALLBACK_SECRET, msg_id=webhook_id))
        assert answer.status_code == 200, answer.text
        answers[webhook_id].append(answer.json())

    with httpx.Client(base_url=external.url, timeout=60, limits=httpx.Limits(max_connections=16)) as http:
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool: list(pool.map(send, phase_one))
        refunds = {}
        for user, job_id in jobs:
            if job_id in canceled:
                answer = user.post(f"/jobs/{job_id}/cancel")
                assert answer.status_code == 200, answer.text
                refunds[job_id] = answer.json()["credits_refunded"]
        with ThreadPoolExecutor(16) as pool: list(pool.map(send, phase_two))
        elapsed = time.perf_counter() - started

    for webhook_id, replies in answers.items():  # each distinct callback acted on once; every copy after it a duplicate
        assert sum(not reply["duplicate"] for reply in replies) == 1, (webhook_id, replies)
    for webhook_id in phase_two:
        job_id, body = messages[webhook_id]
        if job_id in canceled and body["item"] >= 5:
            assert any(reply.get("ignored") == "job is canceled" for reply in answers[webhook_id]), answers[webhook_id]
    assert metric(external, "s3lib_callbacks_total", outcome="duplicate") - duplicates_before == 1000 - 240

    for user in users:
        charged_total = 0
        for owner, job_id in jobs:
            if owner is not user: continue
            status = user.get(f"/jobs/{job_id}").json()
            items = range(5) if job_id in canceled else range(10)
            charged = sum(outcome[job_id, item] == "done" for item in items)
            assert status["credits_charged"] == charged, status
            assert status["credits_reserved"] == 10 and status["credits_refunded"] == 10 - charged
            if job_id in canceled:
                assert status["status"] == "canceled" and refunds[job_id] == 10 - charged
            else:
                assert status["status"] == ("done" if charged else "failed")
                assert [i["status"] for i in status["items"]] == [outcome[job_id, i] for i in range(10)]
                for entry in status["items"]:
                    assert (entry["result_url"] is not None) == (entry["status"] == "done")
            charged_total += charged
        me = user.me()
        assert (me["credits"], me["active_jobs"]) == (30 - charged_total, 0)
        assert me["credits"] == balance_from_jobs(user)
    print(f"1,000 callbacks in {elapsed:.1f} s ({1000 / elapsed:.0f}/s) over 16 connections")


def test_ledger_sums_match_balances_after_shutdown(external):
    "Stop the server cleanly, then open its DuckDB file: every balance equals the sum of that user's entries."
    assert external.stop(), external.log_tail()
    with Ledger(external.data_dir / "s3lib.duckdb") as ledger:
        assert ledger.balance_errors() == []
        assert ledger.value("SELECT count(*) FROM users WHERE credits < 0") == 0
        for job in ledger.rows("SELECT id FROM jobs WHERE status IN ('done', 'failed', 'canceled')"):
            credits = ledger.job_credits(job["id"])
            assert credits["reserve"] == credits["charge"] + credits["refund"], (job, credits)


def test_kill_9_mid_job_then_restart(tmp_path, tiny_sam3):
    "kill -9 while a 10-item job runs; a new server on the same data dir finishes it; credits settle exactly once."
    server = ServerProcess(tmp_path / "data", {"S3LIB_MODEL": str(tiny_sam3), "S3LIB_RUNNER": "inline"}).start()
    try:
        user = Client(server.url).sign_up()
        photos = [png_bytes(64, 48, color=(i * 25, 80, 120)) for i in range(10)]
        job_id = user.uploaded_job(photos)
        assert user.post(f"/jobs/{job_id}/execute").status_code == 202
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = user.get(f"/jobs/{job_id}").json()
            if status["progress"]["done"] >= 1: break
            time.sleep(0.1)
        server.kill()
        assert status["status"] == "running" and status["progress"]["done"] < 10, status
        done_before = {item["item"] for item in status["items"] if item["status"] == "done"}

        server = ServerProcess(server.data_dir, server.env, port=server.port).start()
        user = Client(server.url, token=user.token)
        final = user.wait(job_id, timeout=400)
        assert final["status"] == "done", final
        assert final["progress"]["done"] + final["progress"]["failed"] == 10
        assert done_before <= {item["item"] for item in final["items"] if item["status"] == "done"}
        charged = final["progress"]["done"] - final["progress"]["unchanged"]  # a photo no edit changed is not charged
        assert (final["credits_reserved"], final["credits_charged"], final["credits_refunded"]) == (10, charged, 10 - charged)
        for item in final["items"]:
            if item["status"] == "done":
                result = httpx.get(item["result_url"])
                assert result.status_code == 200 and Image.open(io.BytesIO(result.content)).size == (64, 48)
        me = user.me()
        assert (me["credits"], me["active_jobs"]) == (30 - charged, 0)
        assert server.stop(), server.log_tail()
        with Ledger(server.data_dir / "s3lib.duckdb") as ledger:
            assert ledger.balance_errors() == []
            assert ledger.job_credits(job_id) == {"reserve": 10, "charge": charged, "refund": 10 - charged}
    finally:
        server.kill()
