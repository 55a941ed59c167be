"""Client webhooks in one process, against a real HTTP receiver on loopback: one verified delivery per job end (done, canceled,
expired), retried after the receiver answers 500 twice with the same webhook-id and body, and the job status says how it
went; the SSRF guard refuses private, link-local and loopback addresses in production, by address at creation and by
resolution at delivery (a name that resolves to loopback), and redirects are not followed."""
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook

from s3lib.core import InvalidRequest
from s3lib.ledger import Ledger
from s3lib.presets import load_presets
from s3lib.service import Service
from s3lib.storage import LocalStore
from test_service import PHOTO, RULE, URL_SECRET, RecordingRunner, make_settings, signed

pytestmark = pytest.mark.timeout(120)


class Receiver:
    "A webhook receiver on 127.0.0.1 that answers the statuses it is told to, in turn (then 200), and keeps what it got."
    def __init__(self, answers=()):
        self.answers, self.got = list(answers), []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.got.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                if 300 <= status < 400: self.send_header("location", f"http://127.0.0.1:{self.server.server_port}/elsewhere")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args): pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self): self.server.shutdown()


@pytest.fixture
def receiver():
    made = []
    def make(answers=()):
        made.append(Receiver(answers))
        return made[-1]
    yield make
    for r in made: r.close()


def make_service(tmp_path, env=None):
    "A service whose webhook deliveries run only when the test calls deliver_webhooks (no delivery thread)."
    settings = make_settings(tmp_path, {"S3LIB_JOBS_WEBHOOK_RETRY_SECONDS": "1, 1, 1", **(env or {})})
    store = LocalStore(tmp_path / "store", "http://testserver", URL_SECRET)
    return Service(settings, Ledger(), store, load_presets(settings), runner=RecordingRunner()).start(maintenance_seconds=None, webhook_seconds=None)


def job_with_hook(service, user, url, items=1, upload=True):
    job = service.create_job(user, {"domain": "interior", "rule": RULE, "webhook_url": url,
                                    "items": [{"filename": f"{i}.png", "content_type": "image/png", "size": len(PHOTO)} for i in range(items)]})
    if upload:
        for i in range(items): service.store.put(f"users/{user}/jobs/{job['id']}/inputs/{i}", PHOTO, "image/png")
        service.confirm_upload(user, job["id"])
    return job["id"]


def verified(service, user, got) -> dict:
    "The delivery's payload, verified with the standardwebhooks package under the user's secret from GET /webhooks/secret."
    path, headers, body = got
    return Webhook(service.webhook_secret(user)["secret"]).verify(body, headers)


def test_one_verified_delivery_per_job_end_retried_after_two_500s(tmp_path, receiver):
    service = make_service(tmp_path)
    user = service.sign_up()["user"]["id"]
    hook = receiver([500, 500])
    done_job = job_with_hook(service, user, hook.url)
    assert service.job_status(user, done_job)["webhook"] == {"url": hook.url, "state": "waiting", "attempts": 0}
    service.execute(user, done_job)
    task = service.runner.tasks[-1]
    service.store.put(task.result_key, PHOTO, "image/png")
    for body in ({"item": 0, "status": "running"}, {"item": 0, "status": "done", "result_key": task.result_key}):
        service.handle_callback(*signed(service, done_job, body))
    now = service.now()
    assert service.deliver_webhooks(now) == 1 and service.job_status(user, done_job)["webhook"]["state"] == "pending"
    assert service.deliver_webhooks(now) == 0  # not due again before its wait
    service.deliver_webhooks(now + timedelta(seconds=1.5))
    service.deliver_webhooks(now + timedelta(seconds=3))
    assert len(hook.got) == 3
    ids = {headers["webhook-id"] for _, headers, _ in hook.got}
    assert len(ids) == 1 and len({body for _, _, body in hook.got}) == 1  # the same id and the same bytes on every retry
    payload = verified(service, user, hook.got[-1])
    assert (payload["type"], payload["data"]["id"], payload["data"]["status"]) == ("job.done", done_job, "done")
    state = service.job_status(user, done_job)["webhook"]
    assert (state["state"], state["attempts"], state["last_status"], state["id"]) == ("delivered", 3, 200, ids.pop())
    service.deliver_webhooks(now + timedelta(hours=2))
    assert len(hook.got) == 3  # delivered once: never again

    canceled = job_with_hook(service, user, hook.url)
    service.cancel(user, canceled)
    expiring = job_with_hook(service, user, hook.url, upload=False)
    later = service.now() + timedelta(hours=service.settings.jobs.unexecuted_ttl_hours + 1)
    service.purge_expired(later)
    service.deliver_webhooks(later)
    events = {verified(service, user, got)["data"]["id"]: verified(service, user, got)["type"] for got in hook.got[3:]}
    assert events == {canceled: "job.canceled", expiring: "job.expired"}
    assert service.job_status(user, expiring)["webhook"]["state"] == "delivered"


def test_a_receiver_that_keeps_failing_is_given_up_after_the_retries(tmp_path, receiver):
    service = make_service(tmp_path)
    user = service.sign_up()["user"]["id"]
    hook = receiver([503] * 10)
    job_id = job_with_hook(service, user, hook.url)
    service.cancel(user, job_id)
    now = service.now()
    for step in range(6): service.deliver_webhooks(now + timedelta(seconds=2 * step))
    state = service.job_status(user, job_id)["webhook"]
    assert (state["state"], state["attempts"], state["last_status"]) == ("failed", 4, 503)  # the first try and three retries
    assert "answered 503" in state["last_error"] and state["next_attempt_at"] is None


def test_redirects_are_not_followed(tmp_path, receiver):
    service = make_service(tmp_path)
    user = service.sign_up()["user"]["id"]
    hook = receiver([302])
    job_id = job_with_hook(service, user, hook.url)
    service.cancel(user, job_id)
    service.deliver_webhooks(service.now())
    assert [path for path, _, _ in hook.got] == ["/hook"]  # /elsewhere never asked
    state = service.job_status(user, job_id)["webhook"]
    assert state["last_status"] == 302 and "redirects are not followed" in state["last_error"] and state["state"] == "pending"


def test_ssrf_guard_in_production(tmp_path, receiver):
    service = make_service(tmp_path, {"S3LIB_ENV": "production"})
    user = service.sign_up()["user"]["id"]
    for url, problem in [("https://10.0.0.5/hook", "private address"), ("https://169.254.169.254/latest/meta-data", "link-local address"),
                         ("https://127.0.0.1/hook", "loopback address"), ("https://[::1]/hook", "loopback address"),
                         ("http://hooks.example.com/hook", "https:// in production"), ("https://192.168.1.20:8443/x", "private address")]:
        with pytest.raises(InvalidRequest) as refused:
            job_with_hook(service, user, url, upload=False)
        assert problem in refused.value.message and refused.value.details.get("field", "webhook_url") == "webhook_url"
    hook = receiver()
    sneaky = hook.url.replace("http://127.0.0.1", "https://localhost")  # a name: allowed at creation, resolved at delivery
    job_id = job_with_hook(service, user, sneaky)
    service.cancel(user, job_id)
    service.deliver_webhooks(service.now())
    state = service.job_status(user, job_id)["webhook"]
    assert (state["state"], state["attempts"]) == ("failed", 1)  # refused at once: retrying cannot make it allowed
    assert state["last_error"] == "refused: localhost resolves to a loopback address (127.0.0.1)"
    assert hook.got == []


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected_to(tmp_path, receiver):
    service = make_service(tmp_path)
    user = service.sign_up()["user"]["id"]
    hook = receiver()
    named = hook.url.replace("127.0.0.1", "localhost")
    job_id = job_with_hook(service, user, named)
    service.cancel(user, job_id)
    service.deliver_webhooks(service.now())
    (path, headers, body), = hook.got
    assert headers["host"] == named.split("/")[2]  # the name the client gave, though the connection went to the checked address
    assert verified(service, user, (path, headers, body))["type"] == "job.canceled"


def test_development_allows_loopback_only(tmp_path):
    service = make_service(tmp_path)
    user = service.sign_up()["user"]["id"]
    with pytest.raises(InvalidRequest, match="this machine in development"):
        job_with_hook(service, user, "https://hooks.example.com/hook", upload=False)
    with pytest.raises(InvalidRequest, match="not loopback"):
        job_with_hook(service, user, "http://10.1.2.3/hook", upload=False)
    assert service.webhook_secret(user)["secret"].startswith("whsec_")
    assert service.webhook_secret(user) != service.webhook_secret(service.sign_up()["user"]["id"])


def test_the_delivery_thread_sends_what_a_job_end_queues(tmp_path, receiver):
    "With the service's own delivery thread (as in production): it looks at the database only once something was queued."
    settings = make_settings(tmp_path, {"S3LIB_JOBS_WEBHOOK_RETRY_SECONDS": "1"})
    store = LocalStore(tmp_path / "store", "http://testserver", URL_SECRET)
    service = Service(settings, Ledger(), store, load_presets(settings), runner=RecordingRunner()).start(maintenance_seconds=None, webhook_seconds=0.1)
    try:
        user = service.sign_up()["user"]["id"]
        hook = receiver()
        job_id = job_with_hook(service, user, hook.url)
        assert service.webhooks._next > service.now()  # nothing pending: the thread does not query
        service.cancel(user, job_id)
        for _ in range(100):
            if hook.got: break
            threading.Event().wait(0.1)
        assert [verified(service, user, got)["type"] for got in hook.got] == ["job.canceled"]
    finally:
        service.close()
