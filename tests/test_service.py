"""Service-level concurrency and fault tests (no HTTP): racing executes and creates from one user,
1,000 signed callbacks (duplicated, reordered, some after cancel), cancel racing the last callback,
kill -9 mid-job with a restart on the same DuckDB file, and a poison item across restarts.

The worker's part is played by hand (results written to the store, callbacks signed with the real
secret) or by the inline runner with a small deterministic segmenter, so these tests are about the
service's bookkeeping, not the model."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import s3lib
from s3lib.auth import sign_callback
from s3lib.core import ConcurrencyLimit, InsufficientCredits, RateLimited, load_settings
from s3lib.ledger import Ledger
from s3lib.presets import load_presets
from s3lib.service import Service
from s3lib.storage import LocalStore

pytestmark = pytest.mark.timeout(120)

REPO = Path(s3lib.__file__).resolve().parent.parent
JWT_SECRET = "jwt-secret-for-service-tests-0123456789abc"
CALLBACK_SECRET = "callback-secret-for-service-tests-9876543210"
URL_SECRET = "url-signing-secret-for-service-tests-000111"
RULE = {"edits": [{"concept": "wall", "action": "recolor", "color": "#1E5AA0"}], "protect": ["person"]}
PHOTO = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde\x00\x00"
         b"\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82")


def make_settings(data_dir, env=None):
    env = {"S3LIB_JWT_SECRET": JWT_SECRET, "S3LIB_CALLBACK_SECRET": CALLBACK_SECRET, "S3LIB_DATA_DIR": str(data_dir),
           "S3LIB_PUBLIC_URL": "http://testserver", **(env or {})}
    return load_settings(REPO / "settings.ini", env=env)


class RecordingRunner:
    "Keeps the tasks it is given; the test plays the worker."
    remote = False

    def __init__(self):
        self.tasks, self.canceled, self._lock = [], [], threading.Lock()

    def start(self, service): pass

    def submit(self, task):
        with self._lock: self.tasks.append(task)

    def cancel(self, job_id):
        with self._lock: self.canceled.append(job_id)

    def stop(self): pass


def make_service(tmp_path, env=None, ledger=None, runner=None):
    settings = make_settings(tmp_path, env)
    store = LocalStore(tmp_path / "store", "http://testserver", URL_SECRET)
    return Service(settings, ledger or Ledger(), store, load_presets(settings), runner=runner or RecordingRunner()).start()


def uploaded_job(service, user, items):
    job = service.create_job(user, {"domain": "interior", "rule": RULE,
                                    "items": [{"filename": f"{i}.png", "content_type": "image/png", "size": len(PHOTO)}
                                              for i in range(items)]})
    for i in range(items): service.store.put(f"users/{user}/jobs/{job['id']}/inputs/{i}", PHOTO, "image/png")
    service.confirm_upload(user, job["id"])
    return job["id"]


def signed(service, job_id, body, msg_id=None):
    "A worker's signed report; it names the job and the first attempt unless `body` says otherwise."
    raw = json.dumps({"job_id": job_id, "attempt": 1} | body).encode()
    return job_id, sign_callback(raw, CALLBACK_SECRET, msg_id=msg_id, timestamp=service.now().timestamp()), raw


def check_books(service):
    "The invariants: balances equal their entries, none negative, active_jobs matches the jobs that hold a slot."
    ledger = service.ledger
    assert ledger.balance_errors() == []
    assert ledger.value("SELECT count(*) FROM users WHERE credits < 0") == 0
    mismatched = ledger.rows("""SELECT u.id, u.active_jobs, (SELECT count(*) FROM jobs j WHERE j.user_id = u.id
                                AND j.status IN ('queued', 'running')) AS holding FROM users u WHERE u.active_jobs != holding""")
    assert mismatched == []
    for job in ledger.jobs_in(("done", "failed", "canceled")):
        credits = ledger.job_credits(job["id"])
        charged = ledger.value("SELECT count(*) FROM items WHERE job_id = ? AND status = 'done' AND NOT unchanged", [job["id"]])
        assert credits["charge"] == charged * (job["credits_per_image"] or 0), job  # photos no edit changed are not charged
        assert credits["refund"] == credits["reserve"] - credits["charge"], job


# ---- racing executes and creates -------------------------------------------------------------------------------

def race_executes(service, user: str, jobs: list, refusals) -> list:
    "Execute every job at the same moment, one thread each; each outcome is the job's status or the refusal's code."
    start = threading.Barrier(len(jobs))

    def execute(job_id):
        start.wait()
        try: return service.execute(user, job_id)["status"]
        except refusals as e: return e.code

    with ThreadPoolExecutor(len(jobs)) as pool: return list(pool.map(execute, jobs))


def test_fifty_concurrent_executes_claim_one_slot(tmp_path):
    service = make_service(tmp_path, {"S3LIB_LIMITS_JOBS_PER_MINUTE": "1000"})
    user = service.sign_up()["user"]["id"]
    jobs = [uploaded_job(service, user, 1) for _ in range(50)]
    outcomes = race_executes(service, user, jobs, ConcurrencyLimit)
    assert outcomes.count("queued") == 1 and outcomes.count("concurrency_limit") == 49
    me = service.me(user)
    assert (me["credits"], me["active_jobs"]) == (29, 1)
    check_books(service)


def test_fifty_concurrent_executes_with_four_slots_and_credits_for_three(tmp_path):
    service = make_service(tmp_path, {"S3LIB_LIMITS_JOBS_PER_MINUTE": "1000", "S3LIB_PLAN_FREE_MAX_CONCURRENT_JOBS": "4"})
    user = service.sign_up()["user"]["id"]
    jobs = [uploaded_job(service, user, 10) for _ in range(50)]
    outcomes = race_executes(service, user, jobs, (ConcurrencyLimit, InsufficientCredits))
    assert outcomes.count("queued") == 3  # 30 credits / 10 per job, although 4 slots were free
    assert outcomes.count("insufficient_credits") == 47
    assert (service.me(user)["credits"], service.me(user)["active_jobs"]) == (0, 3)
    check_books(service)


def test_executes_racing_finishing_jobs_never_exceed_the_limit(tmp_path):
    "Jobs finish (callbacks) while 50 threads keep executing: the slot count never goes over the plan's 2."
    service = make_service(tmp_path, {"S3LIB_LIMITS_JOBS_PER_MINUTE": "1000", "S3LIB_PLAN_FREE_MAX_CONCURRENT_JOBS": "2",
                                      "S3LIB_PLAN_FREE_CREDITS_AT_SIGNUP": "1000"})
    user = service.sign_up()["user"]["id"]
    jobs = [uploaded_job(service, user, 1) for _ in range(50)]
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], service.ledger.value(
                "SELECT count(*) FROM jobs WHERE user_id = ? AND status IN ('queued', 'running')", [user]))

    def execute_and_finish(job_id):
        deadline = time.monotonic() + 60
        while True:
            try: service.execute(user, job_id); break
            except ConcurrencyLimit:
                if time.monotonic() > deadline: return "starved"
                time.sleep(0.005)
        task = next(t for t in list(service.runner.tasks) if t.job_id == job_id)
        service.store.put(task.result_key, PHOTO, "image/png")
        service.handle_callback(*signed(service, job_id, {"item": 0, "status": "done", "result_key": task.result_key}))
        return service.job_status(user, job_id)["status"]

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(16) as pool: outcomes = list(pool.map(execute_and_finish, jobs))
    finally:
        stop.set(); watcher.join()
    assert outcomes == ["done"] * 50
    assert peak[0] <= 2
    assert service.me(user)["credits"] == 950
    check_books(service)


def test_fifty_concurrent_creates_respect_the_rate_limit(tmp_path):
    service = make_service(tmp_path)  # jobs_per_minute = 30 in settings.ini
    user = service.sign_up()["user"]["id"]
    body = {"domain": "interior", "rule": RULE, "items": [{"filename": "a.png", "content_type": "image/png", "size": 100}]}
    start = threading.Barrier(50)

    def create(_):
        start.wait()
        try: return service.create_job(user, body)["status"]
        except RateLimited as e:
            assert 1 <= e.details["retry_after"] <= 60
            return e.code

    with ThreadPoolExecutor(50) as pool: outcomes = list(pool.map(create, range(50)))
    assert outcomes.count("created") == 30 and outcomes.count("rate_limited") == 20
    assert service.ledger.value("SELECT count(*) FROM jobs WHERE user_id = ?", [user]) == 30


def test_concurrent_creates_with_one_idempotency_key_make_one_job(tmp_path):
    service = make_service(tmp_path)
    user = service.sign_up()["user"]["id"]
    body = {"domain": "interior", "rule": RULE, "items": [{"filename": "a.png", "content_type": "image/png", "size": 100}]}
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: service.create_job(user, body, idempotency_key="same-key"), range(20)))
    assert len({a["id"] for a in answers}) == 1
    assert service.ledger.value("SELECT count(*) FROM jobs WHERE user_id = ?", [user]) == 1


# ---- 1,000 callbacks --------------------------------------------------------------------------------------------------

def test_thousand_callbacks_duplicated_reordered_and_after_cancel(tmp_path):
    service = make_service(tmp_path)
    random.seed(3)
    jobs = {}  # job id -> (user, outcome per item: "done"/"failed")
    for _ in range(36):
        user = service.sign_up(client=f"10.0.0.{len(jobs)}")["user"]["id"]
        job_id = uploaded_job(service, user, 10)
        service.execute(user, job_id)
        jobs[job_id] = (user, [random.choice(["done", "done", "failed"]) for _ in range(10)])
    tasks = {(t.job_id, t.item): t for t in service.runner.tasks}
    for task in tasks.values(): service.store.put(task.result_key, PHOTO, "image/png")

    def reports(job_id, items):
        "Each item: running then its outcome; a third of them redelivered (same webhook id), a fifth resent (new id)."
        out = []
        for item in items:
            outcome = jobs[job_id][1][item]
            body = {"item": item, "status": outcome}
            if outcome == "done": body["result_key"] = tasks[(job_id, item)].result_key
            else: body["error"] = "no wall found"
            for message in ({"item": item, "status": "running"}, body):
                sent = signed(service, job_id, message)
                out.append(sent)
                if random.random() < 0.33: out.append(sent)
                if random.random() < 0.2: out.append(signed(service, job_id, message))
        return out

    canceled = set(random.sample(sorted(jobs), 8))
    before_cancel = [r for job_id in jobs for r in reports(job_id, range(4) if job_id in canceled else range(10))]
    after_cancel = [r for job_id in canceled for r in reports(job_id, range(4, 10))]
    random.shuffle(before_cancel)
    random.shuffle(after_cancel)
    assert len(before_cancel) + len(after_cancel) >= 1000

    def deliver(sent):
        return service.handle_callback(*sent)

    with ThreadPoolExecutor(8) as pool: first = list(pool.map(deliver, before_cancel))
    refunds = {job_id: service.cancel(jobs[job_id][0], job_id)["credits_refunded"] for job_id in canceled}
    with ThreadPoolExecutor(8) as pool: second = list(pool.map(deliver, after_cancel))

    answers = first + second
    unique = len({sent[1]["webhook-id"] for sent in before_cancel + after_cancel})
    assert sum(a["duplicate"] for a in answers) == len(answers) - unique
    assert all(a.get("ignored") == "job is canceled" for a in second if not a["duplicate"])
    for job_id, (user, outcomes) in jobs.items():
        status = service.job_status(user, job_id)
        counted = outcomes[:4] if job_id in canceled else outcomes
        done = counted.count("done")
        if job_id in canceled:
            assert status["status"] == "canceled"
            assert refunds[job_id] == 10 - done
        else:
            assert status["status"] == ("done" if done else "failed")
        assert (status["credits_reserved"], status["credits_charged"], status["credits_refunded"]) == (10, done, 10 - done)
        assert service.me(user)["credits"] == 30 - done
        assert service.me(user)["active_jobs"] == 0
    metrics = service.metrics()["callbacks"]
    assert metrics["accepted"] + metrics["ignored"] == unique and metrics["duplicate"] == len(answers) - unique
    check_books(service)


def test_cancel_racing_the_last_callback_settles_once(tmp_path):
    service = make_service(tmp_path)
    pairs = []
    for n in range(30):
        user = service.sign_up(client=f"10.1.0.{n}")["user"]["id"]
        job_id = uploaded_job(service, user, 2)
        service.execute(user, job_id)
        tasks = [t for t in service.runner.tasks if t.job_id == job_id]
        for task in tasks: service.store.put(task.result_key, PHOTO, "image/png")
        service.handle_callback(*signed(service, job_id, {"item": 0, "status": "done", "result_key": tasks[0].result_key}))
        pairs.append((user, job_id, signed(service, job_id, {"item": 1, "status": "done", "result_key": tasks[1].result_key})))

    def race(pair):
        user, job_id, last = pair
        barrier, results = threading.Barrier(2), {}

        def cancel():
            barrier.wait()
            try: results["cancel"] = service.cancel(user, job_id)["credits_refunded"]
            except Exception as e: results["cancel"] = e.code

        def callback():
            barrier.wait()
            results["callback"] = service.handle_callback(*last)

        threads = [threading.Thread(target=cancel), threading.Thread(target=callback)]
        for t in threads: t.start()
        for t in threads: t.join()
        return user, job_id, results

    with ThreadPoolExecutor(4) as pool: raced = list(pool.map(race, pairs))
    outcomes = set()
    for user, job_id, results in raced:
        status = service.job_status(user, job_id)
        if status["status"] == "canceled":
            outcomes.add("canceled")
            assert results["cancel"] == 1 and results["callback"].get("ignored") == "job is canceled"
            assert (status["credits_charged"], status["credits_refunded"], service.me(user)["credits"]) == (1, 1, 29)
        else:
            outcomes.add("done")
            assert status["status"] == "done" and results["cancel"] == "invalid_state"
            assert (status["credits_charged"], status["credits_refunded"], service.me(user)["credits"]) == (2, 0, 28)
    check_books(service)


# ---- restarts ------------------------------------------------------------------------------------------------------------

class HalfMaskSegmenter:
    "Deterministic stand-in for SAM 3: every concept found once, covering the left half of the photo."
    vision_passes = 0

    def segment(self, image, concepts, thresholds=None, mask_threshold=None, key=None):
        from s3lib.segment import Instance
        self.vision_passes += 1
        mask = np.zeros((image.height, image.width), dtype=bool)
        mask[:, : max(1, image.width // 2)] = True
        return [Instance.from_mask(c.id, mask) for c in concepts]


SERVER_UNTIL_KILLED = textwrap.dedent("""
    import json, sys, threading, time
    sys.path.insert(0, sys.argv[2])
    from pathlib import Path
    from test_service import PHOTO, HalfMaskSegmenter, make_settings, uploaded_job
    from s3lib.server import create_service

    class HangsOnSecondPhoto(HalfMaskSegmenter):
        def segment(self, image, concepts, **kwargs):
            if self.vision_passes >= 1: threading.Event().wait()  # the process is killed while stuck here
            return super().segment(image, concepts, **kwargs)

    data = Path(sys.argv[1])
    service = create_service(make_settings(data), segmenter_factory=HangsOnSecondPhoto)
    user = service.sign_up()["user"]["id"]
    job_id = uploaded_job(service, user, 3)
    service.execute(user, job_id)
    while service.job_status(user, job_id)["progress"]["done"] < 1: time.sleep(0.05)
    (data / "state.json").write_text(json.dumps({"user": user, "job": job_id}))
    threading.Event().wait()
""")


def test_kill_minus_nine_mid_job_then_restart_finishes_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-c", SERVER_UNTIL_KILLED, str(tmp_path), str(Path(__file__).parent)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state = tmp_path / "state.json"
    try:
        deadline = time.monotonic() + 60
        while not state.exists():
            assert server.poll() is None, server.stdout.read().decode()
            assert time.monotonic() < deadline, "the server never finished its first photo"
            time.sleep(0.05)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    ids = json.loads(state.read_text())

    from s3lib.server import create_service
    service = create_service(make_settings(tmp_path), segmenter_factory=HalfMaskSegmenter)
    try:
        assert service.runner.join(timeout=60)
        status = service.job_status(ids["user"], ids["job"])
        assert status["status"] == "done"
        charged = status["progress"]["done"] - status["progress"]["unchanged"]  # photos no edit changed are not charged
        assert (status["progress"]["done"], status["credits_reserved"], status["credits_charged"], status["credits_refunded"]) == \
            (3, 3, charged, 3 - charged)
        assert [it["attempts"] for it in service.ledger.items(ids["job"])] == [1, 2, 2]
        assert service.me(ids["user"])["credits"] == 30 - charged
        check_books(service)
    finally:
        service.close()


def test_poison_item_fails_and_is_refunded_after_max_attempts_across_restarts(tmp_path):
    "An item whose worker dies every time (no report): each restart re-queues it, until max_attempts (3)."
    path = tmp_path / "s3lib.duckdb"
    service = make_service(tmp_path, ledger=Ledger(path))
    user = service.sign_up()["user"]["id"]
    job_id = uploaded_job(service, user, 2)
    service.execute(user, job_id)
    good = next(t for t in service.runner.tasks if t.item == 1)
    service.store.put(good.result_key, PHOTO, "image/png")
    service.handle_callback(*signed(service, job_id, {"item": 1, "status": "done", "result_key": good.result_key}))
    attempts = [[t.attempt for t in service.runner.tasks if t.item == 0]]
    service.close()
    for _ in range(3):
        service = make_service(tmp_path, ledger=Ledger(path))
        attempts.append([t.attempt for t in service.runner.tasks])
        service.close()
    assert attempts == [[1], [2], [3], []]  # the fourth start gives up instead of a fourth attempt
    service = make_service(tmp_path, ledger=Ledger(path))
    status = service.job_status(user, job_id)
    assert status["status"] == "done" and [it["status"] for it in status["items"]] == ["failed", "done"]
    assert status["items"][0]["error"] == "gave up after 3 attempt(s): the worker stopped (restart)"
    assert (status["credits_charged"], status["credits_refunded"], service.me(user)["credits"]) == (1, 1, 29)
    check_books(service)
    service.close()


def test_concurrent_retries_of_one_dead_attempt_requeue_it_once(tmp_path):
    "Twenty parts of a runner report the same dead attempt at once: the item goes out again exactly once."
    service = make_service(tmp_path)
    user = service.sign_up()["user"]["id"]
    job_id = uploaded_job(service, user, 1)
    service.execute(user, job_id)
    start = threading.Barrier(20)

    def retry(_):
        start.wait()
        return service.retry_task(job_id, 0, "actor died", attempt=1)

    with ThreadPoolExecutor(20) as pool: outcomes = list(pool.map(retry, range(20)))
    assert outcomes.count("resubmitted") == 1 and outcomes.count("ignored") == 19
    assert [t.attempt for t in service.runner.tasks] == [1, 2]
    assert service.ledger.item(job_id, 0)["attempts"] == 2
    check_books(service)
