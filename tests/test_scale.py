"""Scale-out end to end: the Ray and Runpod runners, and S3 storage (nanio), against the real app over HTTP.

Each server is the real app (`s3lib.server.build_app`) served by uvicorn on a loopback port in this process. Workers are
other processes (Ray actors) or the threads of a local Runpod-compatible endpoint, and reach the server only as remote
workers do: presigned URLs for the photo and the result, signed callbacks to S3LIB_PUBLIC_URL.

The runpod package's own local API server (`python handler.py --rp_serve_api`) runs offline but does not speak the
documented endpoint contract (no endpoint id in the path, POST-only /status that runs the job inside the status call and
forgets it after one read, no /cancel, no API key), so `LocalRunpodEndpoint` below speaks that contract itself and runs
the handler through runpod's own `run_job`, the function a Runpod worker uses to call it.
"""
import asyncio
import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from PIL import Image

from s3lib.core import load_settings

pytestmark = [pytest.mark.scale, pytest.mark.timeout(300)]

JWT_SECRET = "scale-test-jwt-secret-0123456789-abcdefgh"
CALLBACK_SECRET = "scale-test-callback-secret-0123456789-abcd"
from api_server import free_port
from conftest import NANIO_ACCESS_KEY as ACCESS_KEY, NANIO_SECRET_KEY as SECRET_KEY
ENDPOINT_ID, RUNPOD_KEY = "s3lib-test-endpoint", "rp-test-key-0123"
POISON = (255, 0, 255)  # a photo whose first pixel has this colour kills the Ray worker that segments it
RULE = {"edits": [{"concept": "wall", "action": "recolor", "color": "#EDE6DA"}], "protect": []}


def _session_of(process) -> int | None:
    try: return os.getsid(process.pid)
    except (ProcessLookupError, PermissionError): return None


def png(color, size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def photos(n: int, poison: tuple = ()) -> list[bytes]:
    return [png(POISON if i in poison else (40 + 30 * i, 120, 200 - 20 * i)) for i in range(n)]


def make_settings(folder, tiny_sam3, **changes):
    "Settings for a test server on a free loopback port, data under `folder`, the tiny model, strong test secrets."
    port = free_port()
    sections = {"server": {"data_dir": str(folder), "host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},
                "auth": {"jwt_secret": JWT_SECRET, "callback_secret": CALLBACK_SECRET},
                "model": {"id": str(tiny_sam3), "device": "cpu", "threads": 1}}
    for section, values in changes.items(): sections[section] = sections.get(section, {}) | values
    return load_settings(env={}).replace(**sections)


class Server:
    "The app on uvicorn in a thread; the lifespan starts the service (and its runner) and stops it on exit."
    def __init__(self, settings, runner=None):
        import uvicorn
        from s3lib.server import build_app
        self.app, self.service = build_app(settings, runner=runner, ui=False)
        self.url = settings.server.public_url
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=settings.server.port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="test-server", daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 180
        while not self.server.started:
            if not self.thread.is_alive(): raise RuntimeError("the test server stopped while starting (see the log above)")
            if time.monotonic() > deadline: raise RuntimeError("the test server did not start within 180 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(120)


class Client:
    "A REST client for one anonymous user."
    def __init__(self, base: str):
        self.base, self.session = base, requests.Session()
        answer = self.call("POST", "/auth/anon", 201)
        self.session.headers["Authorization"] = f"Bearer {answer['token']}"
        self.user_id = answer["user"]["id"]

    def call(self, method: str, path: str, expect: int, **options):
        response = self.session.request(method, self.base + path, timeout=30, **options)
        assert response.status_code == expect, f"{method} {path}: expected {expect}, got {response.status_code} {response.text[:500]}"
        return response.json() if response.content else None

    def create_and_upload(self, images: list[bytes], rule=None, rule_id=None) -> dict:
        body = {"domain": "interior", "items": [{"filename": f"photo-{i}.png", "content_type": "image/png", "size": len(data)}
                                                for i, data in enumerate(images)]}
        body |= {"rule_id": rule_id} if rule_id else {"rule": rule or RULE}
        job = self.call("POST", "/jobs", 201, json=body)
        for upload, data in zip(job["uploads"], images):
            response = requests.put(upload["url"], data=data, headers=upload["headers"], timeout=30)
            assert response.status_code == 200, f"upload of item {upload['item']}: {response.status_code} {response.text[:300]}"
        return job

    def start_job(self, images: list[bytes], **options) -> str:
        job = self.create_and_upload(images, **options)
        self.call("POST", f"/jobs/{job['id']}/confirm-upload", 200)
        queued = self.call("POST", f"/jobs/{job['id']}/execute", 202)
        assert queued["credits_reserved"] == len(images)
        return job["id"]

    def wait_job(self, job_id: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.call("GET", f"/jobs/{job_id}", 200)
            if job["status"] in ("done", "failed", "canceled"): return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout} s: {job}"
            time.sleep(0.2)


def check_results(job: dict, images: list[bytes]) -> None:
    "Every done item's result downloads through its URL and is a PNG of the photo's size."
    for item in job["items"]:
        if item["status"] != "done": continue
        response = requests.get(item["result_url"], timeout=30)
        assert response.status_code == 200, response.text[:300]
        result = Image.open(io.BytesIO(response.content))
        assert (result.format, result.size) == ("PNG", Image.open(io.BytesIO(images[item["item"]])).size)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)
    return value


# ---------------------------------------------------------------------------------------------------------------------
# Ray: a local pool of 2 CPU actors holding the tiny SAM 3
# ---------------------------------------------------------------------------------------------------------------------

class SlowTinySegmenter:
    """Loads the tiny SAM 3 in the actor; each segmentation takes ≥ `delay` s (so a test can kill an actor mid-task), and
    a poison photo kills the worker process, like a segfault in a native library would."""
    def __init__(self, model_path: str, delay: float):
        self.model_path, self.delay = model_path, delay

    def __call__(self):
        from s3lib.segment import SegmenterLoader
        self.model = SegmenterLoader(self.model_path, device="cpu", threads=1)()
        self.device = self.model.device
        return self

    def segment(self, picture, concepts, **options):
        if picture.getpixel((0, 0)) == POISON: os._exit(3)
        time.sleep(self.delay)
        return self.model.segment(picture, concepts, **options)


@pytest.fixture(scope="module")
def ray_home(tmp_path_factory):
    "Ray 2.60 writes ~/.ray/auth_token for a new local cluster: keep it in a temporary HOME, with token auth off."
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp_path_factory.mktemp("ray-home")))
        patch.setenv("RAY_AUTH_MODE", "disabled")
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        yield


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory, tiny_sam3, ray_home):
    pytest.importorskip("ray")
    import ray.cloudpickle
    from s3lib.runners.ray import RayRunner
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actors cannot import this test module
    settings = make_settings(tmp_path_factory.mktemp("ray-server"), tiny_sam3,
                             runner={"kind": "ray", "ray_actors": 2, "ray_gpus_per_actor": 0}, jobs={"max_attempts": 3})
    runner = RayRunner.from_settings(settings, segmenter_factory=SlowTinySegmenter(str(tiny_sam3), delay=1.0))
    with Server(settings, runner=runner) as server:
        wait_for(lambda: sum(w["ready"] for w in runner.workers()) == 2, 180, "both Ray workers to load the model")
        yield server, runner


def test_ray_pool_job_of_six(ray_server):
    server, runner = ray_server
    client = Client(server.url)
    images = photos(6)
    job = client.wait_job(client.start_job(images))
    assert job["status"] == "done" and [i["status"] for i in job["items"]] == ["done"] * 6, job
    charged = job["progress"]["done"] - job["progress"]["unchanged"]  # photos no edit changed are not charged
    assert (job["progress"]["done"], job["credits_reserved"], job["credits_charged"], job["credits_refunded"]) == (6, 6, charged, 6 - charged)
    assert client.call("GET", "/me", 200)["credits"] == 30 - charged
    check_results(job, images)
    assert runner.stats()["completed"] >= 6


def test_ray_actor_killed_mid_job(ray_server):
    server, runner = ray_server
    client = Client(server.url)
    lost_before = runner.stats().get("workers_lost", 0)
    images = photos(6)
    job_id = client.start_job(images)

    def busy_worker():
        running = {i["item"] for i in client.call("GET", f"/jobs/{job_id}", 200)["items"] if i["status"] == "running"}
        return next((w for w in runner.workers() if w["task"] and w["task"]["job_id"] == job_id
                     and w["task"]["item"] in running), None)
    victim = wait_for(busy_worker, 60, "a Ray worker processing an item of the job")
    os.kill(victim["pid"], signal.SIGKILL)

    job = client.wait_job(job_id)
    assert job["status"] == "done" and [i["status"] for i in job["items"]] == ["done"] * 6, job
    charged = job["progress"]["done"] - job["progress"]["unchanged"]  # photos no edit changed are not charged
    assert (job["progress"]["done"], job["credits_reserved"], job["credits_charged"], job["credits_refunded"]) == (6, 6, charged, 6 - charged)
    assert client.call("GET", "/me", 200)["credits"] == 30 - charged
    check_results(job, images)
    attempts = {i: server.service.ledger.item(job_id, i)["attempts"] for i in range(6)}
    assert attempts[victim["task"]["item"]] == 2, attempts  # the killed task ran again as attempt 2
    assert runner.stats()["workers_lost"] >= lost_before + 1
    wait_for(lambda: sum(w["ready"] for w in runner.workers()) == 2, 120, "the pool to replace the killed worker")


def test_ray_task_that_always_crashes_is_refunded(ray_server):
    server, runner = ray_server
    client = Client(server.url)
    images = photos(3, poison=(1,))
    job = client.wait_job(client.start_job(images), timeout=240)
    items = job["items"]
    assert job["status"] == "done" and [i["status"] for i in items] == ["done", "failed", "done"], job
    assert "gave up after 3 attempt(s)" in items[1]["error"] and "died while processing it" in items[1]["error"], items[1]
    charged = job["progress"]["done"] - job["progress"]["unchanged"]  # the crashed one refunded, unchanged ones too
    assert (job["progress"]["done"], job["credits_reserved"], job["credits_charged"], job["credits_refunded"]) == (2, 3, charged, 3 - charged)
    assert client.call("GET", "/me", 200)["credits"] == 30 - charged
    assert server.service.ledger.item(job["id"], 1)["attempts"] == 3
    check_results(job, images)


def test_serve_command_with_ray_runner(tmp_path, tiny_sam3, ray_home):
    "`python -m s3lib serve` configured only by environment variables runs a job on its Ray pool and stops cleanly."
    pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")  # installed with ray
    port = free_port()
    env = {**os.environ, "S3LIB_DATA_DIR": str(tmp_path / "data"), "S3LIB_HOST": "127.0.0.1", "S3LIB_PORT": str(port),
           "S3LIB_PUBLIC_URL": f"http://127.0.0.1:{port}", "S3LIB_JWT_SECRET": JWT_SECRET, "S3LIB_CALLBACK_SECRET": CALLBACK_SECRET,
           "S3LIB_MODEL": str(tiny_sam3), "S3LIB_MODEL_DEVICE": "cpu", "S3LIB_MODEL_THREADS": "1", "S3LIB_RUNNER": "ray",
           "S3LIB_RUNNER_RAY_ACTORS": "1", "S3LIB_RUNNER_RAY_ADDRESS": ""}
    log = open(tmp_path / "server.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "s3lib", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def healthy():
            assert process.poll() is None, (tmp_path / "server.log").read_text(errors="replace")[-3000:]
            try: return requests.get(base + "/health", timeout=2).status_code == 200
            except requests.ConnectionError: return False
        wait_for(healthy, 180, "the server to answer /health")
        client = Client(base)
        images = photos(2)
        job = client.wait_job(client.start_job(images), timeout=180)
        assert job["status"] == "done" and [i["status"] for i in job["items"]] == ["done"] * 2, job
        charged = job["progress"]["done"] - job["progress"]["unchanged"]
        assert (job["progress"]["done"], job["credits_charged"], client.call("GET", "/me", 200)["credits"]) == (2, charged, 30 - charged)
        check_results(job, images)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled, after shutdown
        text = (tmp_path / "server.log").read_text(errors="replace")
        assert "runner: ray" in text and "Ray worker 1 ready" in text and "runner stopped" in text, text[-3000:]

        def session_left():  # Ray's processes (raylet, GCS, the actor) ended with the server
            return not [p for p in psutil.process_iter() if _session_of(p) == process.pid]
        wait_for(session_left, 60, "the server's Ray processes to end")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


# ---------------------------------------------------------------------------------------------------------------------
# Runpod: a local endpoint speaking the documented serverless contract
# ---------------------------------------------------------------------------------------------------------------------

class LocalRunpodEndpoint:
    """Runpod's queue-based endpoint operations on loopback — POST /v2/{id}/run, GET /v2/{id}/status/{request},
    POST /v2/{id}/cancel/{request}, `Authorization: Bearer <key>` — with `workers` threads, each with its own handler,
    calling it through runpod's `run_job` as a Runpod worker does. Clearing `gate` holds requests IN_QUEUE."""
    def __init__(self, endpoint_id: str, api_key: str, handler_factory, workers: int = 2):
        from runpod.serverless.modules.rp_job import run_job
        self.endpoint_id, self.api_key, self.run_job = endpoint_id, api_key, run_job
        self.handlers = [handler_factory() for _ in range(workers)]
        self.requests: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.handled: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self): endpoint._route(self, "GET")
            def do_POST(self): endpoint._route(self, "POST")
            def log_message(self, *args): pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v2"
        self.threads = [threading.Thread(target=self.httpd.serve_forever, daemon=True)]
        self.threads += [threading.Thread(target=self._work, args=(h,), daemon=True) for h in self.handlers]

    def __enter__(self):
        for thread in self.threads: thread.start()
        return self

    def __exit__(self, *exc):
        self.gate.set()
        for _ in self.handlers: self._queue.put(None)
        self.httpd.shutdown()
        for thread in self.threads: thread.join(30)
        self.httpd.server_close()

    def of_job(self, job_id: str) -> dict:
        with self._lock: return {rid: dict(r) for rid, r in self.requests.items() if r["input"].get("job_id") == job_id}

    def _answer(self, http, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        http.send_response(status)
        http.send_header("Content-Type", "application/json")
        http.send_header("Content-Length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)

    def _route(self, http, method: str) -> None:
        length = int(http.headers.get("Content-Length") or 0)
        raw = http.rfile.read(length) if length else b""
        with self._lock: self.calls.append((method, http.path))
        if http.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._answer(http, 401, {"error": "Unauthorized"})
        match = re.fullmatch(r"/v2/([^/]+)/(run|status|cancel)(?:/([^/]+))?", http.path)
        if not match or match[1] != self.endpoint_id: return self._answer(http, 404, {"error": "no such endpoint"})
        operation, request_id = match[2], match[3]
        if (operation, method, request_id is None) not in {("run", "POST", True), ("status", "GET", False), ("cancel", "POST", False)}:
            return self._answer(http, 405, {"error": f"{method} {operation} is not an operation"})
        if operation == "run":
            try: body = json.loads(raw)
            except ValueError: body = None
            if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
                return self._answer(http, 400, {"error": "the body must be a JSON object with an 'input' object"})
            request_id = str(uuid.uuid4())
            with self._lock: self.requests[request_id] = {"id": request_id, "status": "IN_QUEUE", "input": body["input"]}
            self._queue.put(request_id)
            return self._answer(http, 200, {"id": request_id, "status": "IN_QUEUE"})
        with self._lock:
            request = self.requests.get(request_id)
            if request is None: return self._answer(http, 404, {"error": "request not found"})
            if operation == "cancel" and request["status"] in ("IN_QUEUE", "IN_PROGRESS"): request["status"] = "CANCELLED"
            answer = {k: v for k, v in request.items() if k != "input"}
        return self._answer(http, 200, answer)

    def _work(self, handler) -> None:
        while (request_id := self._queue.get()) is not None:
            self.gate.wait()
            with self._lock:
                request = self.requests[request_id]
                if request["status"] != "IN_QUEUE": continue  # canceled while queued
                request["status"] = "IN_PROGRESS"
                self.handled.append(request_id)
            result = asyncio.run(self.run_job(handler, {"id": request_id, "input": request["input"]}))
            with self._lock:
                if request["status"] == "IN_PROGRESS":
                    request.update(status="FAILED" if "error" in result else "COMPLETED", **result)


@pytest.fixture(scope="module")
def runpod_endpoint(tiny_sam3):
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "ERROR")  # read when runpod is imported
    pytest.importorskip("runpod")
    from s3lib.runners.runpod import RunpodWorker
    from s3lib.segment import SegmenterLoader
    from s3lib.worker import HttpTransport
    factory = lambda: RunpodWorker(SegmenterLoader(str(tiny_sam3), device="cpu", threads=1), HttpTransport(CALLBACK_SECRET))
    with LocalRunpodEndpoint(ENDPOINT_ID, RUNPOD_KEY, factory, workers=2) as endpoint:
        yield endpoint


def runpod_runner(settings):
    from s3lib.runners.runpod import RunpodRunner
    return RunpodRunner.from_settings(settings, poll_seconds=0.2)


def runpod_changes(endpoint) -> dict:
    return {"runner": {"kind": "runpod", "runpod_url": endpoint.url, "runpod_endpoint_id": ENDPOINT_ID, "runpod_api_key": RUNPOD_KEY}}


@pytest.fixture(scope="module")
def runpod_server(tmp_path_factory, tiny_sam3, runpod_endpoint):
    settings = make_settings(tmp_path_factory.mktemp("runpod-server"), tiny_sam3, **runpod_changes(runpod_endpoint))
    runner = runpod_runner(settings)
    with Server(settings, runner=runner) as server:
        yield server, runner


def test_runpod_job_end_to_end(runpod_server, runpod_endpoint):
    server, runner = runpod_server
    client = Client(server.url)
    images = photos(3)
    job_id = client.start_job(images)
    job = client.wait_job(job_id)
    assert job["status"] == "done" and [i["status"] for i in job["items"]] == ["done"] * 3, job
    charged = job["progress"]["done"] - job["progress"]["unchanged"]
    assert (job["progress"]["done"], job["credits_reserved"], job["credits_charged"], job["credits_refunded"]) == (3, 3, charged, 3 - charged)
    assert client.call("GET", "/me", 200)["credits"] == 30 - charged
    check_results(job, images)
    requests_of_job = runpod_endpoint.of_job(job_id)
    assert sorted(r["input"]["item"] for r in requests_of_job.values()) == [0, 1, 2]
    assert runner.join(timeout=30), runner.stats()  # the runner saw every request end …
    assert {r["status"] for r in runpod_endpoint.of_job(job_id).values()} == {"COMPLETED"}  # … as COMPLETED
    for request in requests_of_job.values():  # a self-contained task: URLs and the rule, no storage credentials
        assert request["input"]["input_url"].startswith(server.url + "/objects/") and "secret" not in json.dumps(request["input"])


def test_runpod_cancel_cancels_submitted_requests(runpod_server, runpod_endpoint):
    server, runner = runpod_server
    client = Client(server.url)
    runpod_endpoint.gate.clear()  # the endpoint's workers hold what they take: requests stay queued
    try:
        job_id = client.start_job(photos(3))
        wait_for(lambda: len(runpod_endpoint.of_job(job_id)) == 3, 30, "3 requests on the endpoint")
        canceled = client.call("POST", f"/jobs/{job_id}/cancel", 200)
        assert (canceled["status"], canceled["credits_refunded"]) == ("canceled", 3)
        wait_for(lambda: {r["status"] for r in runpod_endpoint.of_job(job_id).values()} == {"CANCELLED"}, 30,
                 "the job's requests to be cancelled on the endpoint")
        cancel_calls = [path for method, path in runpod_endpoint.calls if method == "POST" and "/cancel/" in path]
        assert sorted(path.rsplit("/", 1)[1] for path in cancel_calls) == sorted(runpod_endpoint.of_job(job_id))
    finally:
        runpod_endpoint.gate.set()
    assert runner.join(timeout=30), runner.stats()
    time.sleep(0.5)
    assert not set(runpod_endpoint.handled) & set(runpod_endpoint.of_job(job_id))  # no worker ran a cancelled request
    job = client.call("GET", f"/jobs/{job_id}", 200)
    assert (job["status"], job["credits_charged"], job["credits_refunded"]) == ("canceled", 0, 3)
    assert client.call("GET", "/me", 200)["credits"] == 30


def test_runpod_wrong_api_key_fails_and_refunds(tmp_path_factory, tiny_sam3, runpod_endpoint):
    "A misconfigured endpoint does not hold credits: submissions are refused, items fail after max_attempts, all refunded."
    changes = runpod_changes(runpod_endpoint)
    changes["runner"]["runpod_api_key"] = "rp-wrong-key"
    settings = make_settings(tmp_path_factory.mktemp("runpod-wrong-key"), tiny_sam3, **changes, jobs={"max_attempts": 2})
    with Server(settings, runner=runpod_runner(settings)) as server:
        client = Client(server.url)
        job = client.wait_job(client.start_job(photos(2)), timeout=60)
    assert job["status"] == "failed", job
    assert all("gave up after 2 attempt(s)" in i["error"] and "S3LIB_RUNNER_RUNPOD_API_KEY" in i["error"] for i in job["items"]), job
    assert (job["credits_reserved"], job["credits_charged"], job["credits_refunded"]) == (2, 0, 2)


# ---------------------------------------------------------------------------------------------------------------------
# S3 storage: the seed flow against nanio (which enforces SigV4 presigned URLs), workers on the Runpod path
# ---------------------------------------------------------------------------------------------------------------------

def s3_changes(endpoint: str) -> dict:
    "Storage settings for a fresh bucket on nanio (created here: the app expects it to exist)."
    from s3lib.storage import S3Store
    bucket = f"s3lib-scale-{uuid.uuid4().hex[:12]}"
    S3Store(bucket, endpoint_url=endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY).ensure_bucket()
    return {"storage": {"backend": "s3", "endpoint_url": endpoint, "bucket": bucket, "region": "us-east-1",
                        "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}}


def test_s3_seed_flow(tmp_path_factory, tiny_sam3, nanio_endpoint, runpod_endpoint):
    settings = make_settings(tmp_path_factory.mktemp("s3-server"), tiny_sam3, **s3_changes(nanio_endpoint),
                             **runpod_changes(runpod_endpoint))
    with Server(settings) as server:  # the runner [runner] kind names: s3lib.runners.registry.make_runner → RunpodRunner.from_settings
        assert type(server.service.runner).__name__ == "RunpodRunner"
        client, stranger = Client(server.url), Client(server.url)
        me = client.call("GET", "/me", 200)
        assert (me["credits"], me["limits"]["max_rules"]) == (30, 2)
        assert {p["id"] for p in client.call("GET", "/presets", 200)} >= {"interior", "seller"}
        rule = {"name": "warm walls", "domain": "interior", **RULE}
        first = client.call("POST", "/rules", 201, json=rule)
        second = client.call("POST", "/rules", 201, json=rule | {"name": "second"})
        assert client.call("POST", "/rules", 403, json=rule | {"name": "third"})["error"]["code"] == "plan_limit"
        client.call("DELETE", f"/rules/{second['id']}", 204)
        updated = client.call("PUT", f"/rules/{first['id']}", 200, json=rule | {"name": "warmer walls"})
        assert updated["name"] == "warmer walls" and len(client.call("GET", "/rules", 200)) == 1

        images = photos(3)
        job_id = client.start_job(images, rule_id=first["id"])
        job = client.wait_job(job_id)
        assert job["status"] == "done" and [i["status"] for i in job["items"]] == ["done"] * 3, job
        assert all(urlsplit(i["result_url"]).netloc == urlsplit(nanio_endpoint).netloc for i in job["items"])
        check_results(job, images)
        charged = job["progress"]["done"] - job["progress"]["unchanged"]
        assert (job["progress"]["done"], job["credits_reserved"], job["credits_charged"], job["credits_refunded"]) == (3, 3, charged, 3 - charged)
        assert client.call("GET", "/me", 200)["credits"] == 30 - charged

        assert stranger.call("GET", f"/jobs/{job_id}", 404)["error"]["code"] == "not_found"
        assert stranger.call("GET", f"/rules/{first['id']}", 404)["error"]["code"] == "not_found"
        assert stranger.call("GET", "/jobs", 200) == []

        runpod_endpoint.gate.clear()
        try:
            held = client.start_job(photos(2))
            canceled = client.call("POST", f"/jobs/{held}/cancel", 200)
        finally:
            runpod_endpoint.gate.set()
        assert canceled["credits_refunded"] == 2 and client.call("GET", "/me", 200)["credits"] == 30 - charged


def tampered(url: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    signature = query["X-Amz-Signature"]
    query["X-Amz-Signature"] = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_s3_refuses_bad_uploads_and_reports_missing_items(tmp_path_factory, tiny_sam3, nanio_endpoint):
    settings = make_settings(tmp_path_factory.mktemp("s3-refusals"), tiny_sam3, **s3_changes(nanio_endpoint),
                             jobs={"upload_url_seconds": 3})
    with Server(settings) as server:
        client = Client(server.url)
        images = photos(5)
        body = {"domain": "interior", "rule": RULE,
                "items": [{"filename": f"p{i}.png", "content_type": "image/png", "size": len(d)} for i, d in enumerate(images)]}
        job = client.call("POST", "/jobs", 201, json=body)
        uploads = job["uploads"]
        put = lambda upload, data, headers=None, url=None: requests.put(url or upload["url"], data=data,
                                                                       headers=headers or upload["headers"], timeout=30).status_code
        assert put(uploads[0], images[0]) == 200
        assert put(uploads[1], images[1], url=tampered(uploads[1]["url"])) == 403
        assert put(uploads[2], images[2], headers=uploads[2]["headers"] | {"Content-Type": "image/jpeg"}) == 403
        assert put(uploads[3], images[3] + b"\0" * 64) == 403  # larger than the signed Content-Length
        other_key = uploads[0]["url"].replace("/inputs/0", "/inputs/4")
        assert put(uploads[4], images[4], url=other_key) == 403  # a URL signed for another object
        time.sleep(4)  # past the 3 s lifetime
        assert put(uploads[4], images[4]) == 403  # expired
        refused = client.call("POST", f"/jobs/{job['id']}/confirm-upload", 409)["error"]
        assert (refused["code"], refused["items"]) == ("upload_incomplete", [1, 2, 3, 4])
        assert "1, 2, 3, 4" in refused["message"]
