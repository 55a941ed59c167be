"""Bad input over real HTTP: each case gets its documented 4xx status and error code (never a 500) and leaves
every user's visible state — me, rules, jobs, items, credits, stored objects — exactly as it was."""
import base64
import json
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import jwt
import pytest

from api_server import CALLBACK_SECRET, JWT_SECRET, Client, ServerProcess, error_of, png_bytes
from s3lib.auth import sign_callback

pytestmark = pytest.mark.timeout(300)

RULE = {"name": "warm walls", "domain": "interior", "protect": ["person"],
        "edits": [{"concept": "wall", "action": "recolor", "color": "#EDE6DA"}]}
PHOTO = png_bytes(40, 30)


@dataclass
class World:
    "Two users and their things, built once; every case runs against them."
    server: ServerProcess
    alice: Client
    bob: Client
    alice_rule: str
    bob_rule: str
    created: dict  # alice's job as POST /jobs returned it (status created, nothing uploaded)
    created_body: dict  # the body it was created with, under Idempotency-Key "first-key"
    garbage: str  # alice's job whose only upload is not an image (created)
    active: str  # alice's executed job, running (one "running" callback applied)
    bob_job: str  # bob's uploaded job

    @property
    def url(self) -> str: return self.server.url


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("bad-input") / "data", {"S3LIB_RUNNER": "external"}).start()
    alice, bob = Client(server.url).sign_up(), Client(server.url).sign_up()
    alice_rule = alice.post("/rules", json=RULE).json()["id"]
    bob_rule = bob.post("/rules", json=RULE | {"name": "bob's"}).json()["id"]
    created_body = {"domain": "interior", "rule_id": alice_rule,
                    "items": [{"filename": "room.png", "content_type": "image/png", "size": len(PHOTO)}]}
    created = alice.post("/jobs", json=created_body, headers={"Idempotency-Key": "first-key"})
    assert created.status_code == 201, created.text
    garbage_job = alice.create_job([b"this is not an image at all"])
    alice.upload(garbage_job, [b"this is not an image at all"])
    active = alice.uploaded_job([PHOTO])
    assert alice.post(f"/jobs/{active}/execute").status_code == 202
    running = callback(server.url, active, {"item": 0, "status": "running"}, msg_id="msg_setup_running")
    assert running.json() == {"ok": True, "duplicate": False}, running.text
    assert alice.get(f"/jobs/{active}").json()["status"] == "running"
    yield World(server, alice, bob, alice_rule, bob_rule, created.json(), created_body, garbage_job["id"], active,
                bob.uploaded_job([PHOTO]))
    assert server.stop(), server.log_tail()
    assert "Traceback" not in server.log_path.read_text(encoding="utf-8", errors="replace"), server.log_tail()


def callback(url: str, job_id: str, body, secret: str = CALLBACK_SECRET, raw: bytes | None = None, **signing) -> httpx.Response:
    "A worker's signed report; a dict body names the job and the first attempt unless it says otherwise."
    raw = json.dumps({"job_id": job_id, "attempt": 1} | body if isinstance(body, dict) else body).encode() if raw is None else raw
    return httpx.post(f"{url}/jobs/{job_id}/callback", content=raw, headers=sign_callback(raw, secret, **signing))


def signed_post(url: str, path: str, body, raw: bytes | None = None) -> httpx.Response:
    "A POST signed like a callback (the worker routes)."
    raw = json.dumps(body).encode() if raw is None else raw
    return httpx.post(f"{url}{path}", content=raw, headers=sign_callback(raw, CALLBACK_SECRET))


def token(claims: dict, key: str = JWT_SECRET, algorithm: str = "HS256") -> dict:
    return {"Authorization": f"Bearer {jwt.encode(claims, key, algorithm=algorithm)}"}


def alg_none_token(sub: str) -> dict:
    encode = lambda part: base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
    now = int(time.time())
    return {"Authorization": f"Bearer {encode({'alg': 'none', 'typ': 'JWT'})}.{encode({'sub': sub, 'iat': now, 'exp': now + 3600})}."}


def with_query(url: str, **changes) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode(dict(parse_qsl(parts.query)) | changes)))


def expired_upload_url(w: World) -> str:
    "A URL for alice's upload signed with the server's own key, that expired a second ago."
    from s3lib.core import load_settings
    from s3lib.storage import LocalStore
    from s3lib.server import store_signing_secret
    settings = load_settings(env={"S3LIB_JWT_SECRET": JWT_SECRET})
    store = LocalStore(w.server.data_dir / "expired-url-signer", w.url, store_signing_secret(settings))
    key = urlsplit(w.created["uploads"][0]["url"]).path.removeprefix("/objects/")
    url = store.presign_put(key, "image/png", len(PHOTO), 1).url
    time.sleep(2.1)
    return url


def job_body(w: World, **changes) -> dict:
    return {"domain": "interior", "rule_id": w.alice_rule,
            "items": [{"filename": "room.png", "content_type": "image/png", "size": len(PHOTO)}]} | changes


def item(**changes) -> dict:
    return {"filename": "room.png", "content_type": "image/png", "size": len(PHOTO)} | changes


def huge_chunks():
    for _ in range(40): yield b" " * 65536  # 2.6 MB in chunks, no Content-Length


@dataclass
class Case:
    name: str
    send: Callable[[World], httpx.Response]
    status: int
    code: str | None  # None: a 200 whose body must contain `body`
    body: dict | None = None


CASES = [
    # ---- tokens ---------------------------------------------------------------------------------------------
    Case("no token", lambda w: httpx.get(f"{w.url}/me"), 401, "unauthorized"),
    Case("basic auth instead of bearer", lambda w: httpx.get(f"{w.url}/me", headers={"Authorization": "Basic YTpi"}), 401, "unauthorized"),
    Case("token is not a JWT", lambda w: httpx.get(f"{w.url}/me", headers={"Authorization": "Bearer not-a-jwt"}), 401, "unauthorized"),
    Case("alg=none token", lambda w: httpx.get(f"{w.url}/me", headers=alg_none_token(w.alice.user["id"])), 401, "unauthorized"),
    Case("expired token", lambda w: httpx.get(f"{w.url}/me", headers=token(
        {"sub": w.alice.user["id"], "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600})), 401, "unauthorized"),
    Case("token signed with a foreign key", lambda w: httpx.get(f"{w.url}/me", headers=token(
        {"sub": w.alice.user["id"], "iat": int(time.time()), "exp": int(time.time()) + 3600}, key="x" * 48)), 401, "unauthorized"),
    Case("HS512 token with the right key", lambda w: httpx.get(f"{w.url}/me", headers=token(
        {"sub": w.alice.user["id"], "iat": int(time.time()), "exp": int(time.time()) + 3600}, algorithm="HS512")), 401, "unauthorized"),
    Case("token without exp", lambda w: httpx.get(f"{w.url}/me", headers=token(
        {"sub": w.alice.user["id"], "iat": int(time.time())})), 401, "unauthorized"),
    Case("token of a user that does not exist", lambda w: httpx.get(f"{w.url}/me", headers=token(
        {"sub": "nobody", "iat": int(time.time()), "exp": int(time.time()) + 3600})), 401, "unauthorized"),
    Case("10 kB token", lambda w: httpx.get(f"{w.url}/me", headers={"Authorization": "Bearer " + "a" * 10_000}), 401, "unauthorized"),
    Case("no token but a malformed body", lambda w: httpx.post(f"{w.url}/rules", content=b"{oops",
                                                                 headers={"Content-Type": "application/json"}), 401, "unauthorized"),
    # ---- JSON bodies ----------------------------------------------------------------------------------------
    Case("malformed JSON", lambda w: w.alice.post("/rules", content=b'{"name": "x",', headers={"Content-Type": "application/json"}),
         422, "invalid_request"),
    Case("JSON list body", lambda w: w.alice.post("/rules", json=[RULE]), 422, "invalid_request"),
    Case("JSON string body", lambda w: w.alice.post("/rules", json="warm walls"), 422, "invalid_request"),
    Case("empty body", lambda w: w.alice.post("/rules", content=b"", headers={"Content-Type": "application/json"}), 422, "invalid_request"),
    Case("NaN in a number", lambda w: w.alice.post("/rules", content=json.dumps(RULE | {"edits": [
        {"concept": "wall", "action": "adjust", "brightness": float("nan")}]}).encode(), headers={"Content-Type": "application/json"}),
         422, "invalid_request"),
    Case("duplicate keys", lambda w: w.alice.post("/rules", content=b'{"name": "a", "name": "b", "domain": "interior", "edits": []}',
                                                 headers={"Content-Type": "application/json"}), 422, "invalid_request"),
    Case("not UTF-8", lambda w: w.alice.post("/rules", content=b'{"name": "\xff\xfe"}', headers={"Content-Type": "application/json"}),
         422, "invalid_request"),
    Case("form-encoded body", lambda w: w.alice.post("/rules", data={"name": "warm"}), 415, "unsupported_media_type"),
    Case("lone surrogate in a rule name", lambda w: w.alice.post("/rules", content=b'{"name": "\\ud800", "domain": "interior", "edits": []}',
                                                                 headers={"Content-Type": "application/json"}), 422, "invalid_request"),
    Case("lone surrogate as a key", lambda w: w.alice.post("/rules", content=b'{"\\udfff": 1}',
                                                           headers={"Content-Type": "application/json"}), 422, "invalid_request"),
    Case("lone surrogate in a filename, with an Idempotency-Key", lambda w: w.alice.post(
        "/jobs", content=json.dumps(w.created_body | {"items": [{"filename": "\ud800.png", "content_type": "image/png",
                                                                   "size": 10}]}).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": "surrogate-key"}), 422, "invalid_request"),
    Case("signed callback with a lone surrogate", lambda w: callback(w.url, w.active, None,
                                                                     raw=b'{"item": 0, "status": "failed", "error": "\\ud800"}'),
         422, "invalid_request"),
    Case("signed callback nested 5,000 deep", lambda w: callback(w.url, w.active, None, raw=b'{"item": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
         422, "invalid_request"),
    Case("2 MB body", lambda w: w.alice.post("/rules", json=RULE | {"name": "x" * 2_000_000}), 413, "too_large"),
    Case("2.6 MB chunked body", lambda w: w.alice.post("/rules", content=huge_chunks(), headers={"Content-Type": "application/json"}),
         413, "too_large"),
    # ---- rules ----------------------------------------------------------------------------------------------
    Case("unknown rule field", lambda w: w.alice.post("/rules", json=RULE | {"owner": "mallory"}), 422, "invalid_rule"),
    Case("edits is a string", lambda w: w.alice.post("/rules", json=RULE | {"edits": "recolor walls"}), 422, "invalid_rule"),
    Case("bad colour", lambda w: w.alice.post("/rules", json=RULE | {"edits": [
        {"concept": "wall", "action": "recolor", "color": "#GGGGGG"}]}), 422, "invalid_rule"),
    Case("colour as a number", lambda w: w.alice.post("/rules", json=RULE | {"edits": [
        {"concept": "wall", "action": "recolor", "color": 16711680}]}), 422, "invalid_rule"),
    Case("action not allowed on the concept", lambda w: w.alice.post("/rules", json=RULE | {"edits": [
        {"concept": "wall", "action": "remove"}]}), 422, "invalid_rule"),
    Case("unknown domain", lambda w: w.alice.post("/rules", json=RULE | {"domain": "garden"}), 422, "invalid_rule"),
    Case("out-of-range blur radius", lambda w: w.alice.post("/rules", json=RULE | {"edits": [
        {"concept": "window", "action": "blur", "radius": 1e9}]}), 422, "invalid_rule"),
    Case("10,000-character name", lambda w: w.alice.post("/rules", json=RULE | {"name": "n" * 10_000}), 422, "invalid_rule"),
    Case("another user's rule: read", lambda w: w.alice.get(f"/rules/{w.bob_rule}"), 404, "not_found"),
    Case("another user's rule: replace", lambda w: w.alice.put(f"/rules/{w.bob_rule}", json=RULE), 404, "not_found"),
    Case("another user's rule: delete", lambda w: w.alice.delete(f"/rules/{w.bob_rule}"), 404, "not_found"),
    Case("replace a rule with an invalid one", lambda w: w.alice.put(f"/rules/{w.alice_rule}", json=RULE | {"edits": [{}]}),
         422, "invalid_rule"),
    # ---- jobs -----------------------------------------------------------------------------------------------
    Case("path-like filename", lambda w: w.alice.post("/jobs", json=job_body(w, items=[item(filename="../../etc/passwd")])),
         422, "invalid_request"),
    Case("Windows path filename", lambda w: w.alice.post("/jobs", json=job_body(w, items=[item(filename="C:\\photos\\room.png")])),
         422, "invalid_request"),
    Case("filename with a control character", lambda w: w.alice.post("/jobs", json=job_body(w, items=[item(filename="room\n.png")])),
         422, "invalid_request"),
    Case("GIF content type", lambda w: w.alice.post("/jobs", json=job_body(w, items=[item(content_type="image/gif")])),
         422, "invalid_request"),
    Case("size as a string", lambda w: w.alice.post("/jobs", json=job_body(w, items=[item(size="1024")])), 422, "invalid_request"),
    Case("size zero", lambda w: w.alice.post("/jobs", json=job_body(w, items=[item(size=0)])), 422, "invalid_request"),
    Case("size over the limit", lambda w: w.alice.post("/jobs", json=job_body(w, items=[item(size=10**9)])), 413, "too_large"),
    Case("no items", lambda w: w.alice.post("/jobs", json=job_body(w, items=[])), 422, "invalid_request"),
    Case("items is an object", lambda w: w.alice.post("/jobs", json=job_body(w, items=item())), 422, "invalid_request"),
    Case("more items than the plan's batch", lambda w: w.alice.post("/jobs", json=job_body(w, items=[item()] * 11)), 403, "plan_limit"),
    Case("unknown job field", lambda w: w.alice.post("/jobs", json=job_body(w, priority="high")), 422, "invalid_request"),
    Case("both rule_id and rule", lambda w: w.alice.post("/jobs", json=job_body(w, rule={"edits": RULE["edits"]})),
         422, "invalid_request"),
    Case("invalid inline rule", lambda w: w.alice.post("/jobs", json={k: v for k, v in job_body(w).items() if k != "rule_id"} | {
        "rule": {"edits": [{"concept": "wall", "action": "recolor", "color": "#12"}]}}), 422, "invalid_rule"),
    Case("another user's rule_id", lambda w: w.alice.post("/jobs", json=job_body(w, rule_id=w.bob_rule)), 404, "not_found"),
    Case("unknown domain for a job", lambda w: w.alice.post("/jobs", json=job_body(w, domain="garden")), 422, "invalid_request"),
    Case("Idempotency-Key reused with another body", lambda w: w.alice.post(
        "/jobs", json=job_body(w, items=[item(filename="other.png")]), headers={"Idempotency-Key": "first-key"}),
         422, "idempotency_mismatch"),
    Case("Idempotency-Key of 300 characters", lambda w: w.alice.post("/jobs", json=job_body(w), headers={"Idempotency-Key": "k" * 300}),
         422, "invalid_request"),
    Case("another user's job: read", lambda w: w.alice.get(f"/jobs/{w.bob_job}"), 404, "not_found"),
    Case("another user's job: confirm", lambda w: w.alice.post(f"/jobs/{w.bob_job}/confirm-upload"), 404, "not_found"),
    Case("another user's job: execute", lambda w: w.alice.post(f"/jobs/{w.bob_job}/execute"), 404, "not_found"),
    Case("another user's job: cancel", lambda w: w.alice.post(f"/jobs/{w.bob_job}/cancel"), 404, "not_found"),
    Case("a job that does not exist", lambda w: w.alice.get("/jobs/00000000000000000000000000000000"), 404, "not_found"),
    Case("execute before upload", lambda w: w.alice.post(f"/jobs/{w.created['id']}/execute"), 409, "invalid_state"),
    Case("confirm with nothing uploaded", lambda w: w.alice.post(f"/jobs/{w.created['id']}/confirm-upload"), 409, "upload_incomplete"),
    Case("confirm an upload that is not an image", lambda w: w.alice.post(f"/jobs/{w.garbage}/confirm-upload"), 422, "invalid_image"),
    Case("execute a running job again", lambda w: w.alice.post(f"/jobs/{w.active}/execute"), 409, "invalid_state"),
    Case("job list limit 0", lambda w: w.alice.get("/jobs", params={"limit": 0}), 422, "invalid_request"),
    Case("job list limit not a number", lambda w: w.alice.get("/jobs", params={"limit": "all"}), 422, "invalid_request"),
    # ---- uploads through presigned URLs ----------------------------------------------------------------------
    Case("upload with the wrong content type", lambda w: httpx.put(w.created["uploads"][0]["url"], content=PHOTO,
                                                                   headers={"Content-Type": "image/jpeg"}), 403, "forbidden"),
    Case("upload without a content type", lambda w: httpx.put(w.created["uploads"][0]["url"], content=PHOTO), 403, "forbidden"),
    Case("upload larger than signed", lambda w: httpx.put(w.created["uploads"][0]["url"], content=PHOTO + b"\0" * 1000,
                                                          headers={"Content-Type": "image/png"}), 403, "forbidden"),
    Case("upload smaller than signed", lambda w: httpx.put(w.created["uploads"][0]["url"], content=PHOTO[:-10],
                                                           headers={"Content-Type": "image/png"}), 403, "forbidden"),
    Case("upload with a tampered signature", lambda w: httpx.put(with_query(w.created["uploads"][0]["url"], signature="0" * 64),
                                                                 content=PHOTO, headers=w.created["uploads"][0]["headers"]),
         403, "forbidden"),
    Case("upload with a longer signed length", lambda w: httpx.put(with_query(w.created["uploads"][0]["url"], content_length="99999"),
                                                                   content=PHOTO + b"\0" * (99999 - len(PHOTO)),
                                                                   headers={"Content-Type": "image/png"}), 403, "forbidden"),
    Case("upload with a later expiry", lambda w: httpx.put(with_query(w.created["uploads"][0]["url"], expires=str(int(time.time()) + 10**6)),
                                                           content=PHOTO, headers=w.created["uploads"][0]["headers"]), 403, "forbidden"),
    Case("upload to another key with this signature", lambda w: httpx.put(
        w.created["uploads"][0]["url"].replace(f"/jobs/{w.created['id']}/", f"/jobs/{w.active}/"),
        content=PHOTO, headers=w.created["uploads"][0]["headers"]), 403, "forbidden"),
    Case("upload through an expired URL", lambda w: httpx.put(expired_upload_url(w), content=PHOTO,
                                                              headers={"Content-Type": "image/png"}), 403, "forbidden"),
    Case("upload without a signature", lambda w: httpx.put(w.created["uploads"][0]["url"].split("?")[0], content=PHOTO,
                                                           headers={"Content-Type": "image/png"}), 403, "forbidden"),
    Case("path traversal in an object key", lambda w: httpx.put(f"{w.url}/objects/users/..%2F..%2Fsecrets.json?expires=1&signature=a",
                                                                content=PHOTO, headers={"Content-Type": "image/png"}), 422, "invalid_request"),
    Case("download without a signature", lambda w: httpx.get(w.created["uploads"][0]["url"].split("?")[0]), 403, "forbidden"),
    # ---- callbacks ------------------------------------------------------------------------------------------
    Case("callback without signature headers", lambda w: httpx.post(f"{w.url}/jobs/{w.active}/callback",
                                                                     json={"item": 0, "status": "failed", "error": "x"}), 401, "unauthorized"),
    Case("callback signed with another secret", lambda w: callback(w.url, w.active, {"item": 0, "status": "failed", "error": "x"},
                                                                   secret="another-secret-0123456789-abcdefghijk"), 401, "unauthorized"),
    Case("stale callback (10 minutes old)", lambda w: callback(w.url, w.active, {"item": 0, "status": "failed", "error": "x"},
                                                               timestamp=int(time.time()) - 600), 401, "unauthorized"),
    Case("callback from the future", lambda w: callback(w.url, w.active, {"item": 0, "status": "failed", "error": "x"},
                                                        timestamp=int(time.time()) + 600), 401, "unauthorized"),
    Case("callback body changed after signing", lambda w: httpx.post(
        f"{w.url}/jobs/{w.active}/callback", content=b'{"item": 0, "status": "failed", "error": "x"}',
        headers=sign_callback(b'{"item": 0, "status": "running"}', CALLBACK_SECRET)), 401, "unauthorized"),
    Case("callback with a changed webhook-id", lambda w: httpx.post(
        f"{w.url}/jobs/{w.active}/callback", content=b'{"item": 0, "status": "running"}',
        headers=sign_callback(b'{"item": 0, "status": "running"}', CALLBACK_SECRET, msg_id="msg_a") | {"webhook-id": "msg_b"}),
         401, "unauthorized"),
    Case("replayed callback", lambda w: callback(w.url, w.active, {"item": 0, "status": "failed", "error": "x"},
                                                 msg_id="msg_setup_running"), 200, None, {"ok": True, "duplicate": True}),
    Case("callback for an unknown job", lambda w: callback(w.url, "no-such-job", {"item": 0, "status": "running"}), 404, "not_found"),
    Case("done without a result object", lambda w: callback(w.url, w.active, {
        "item": 0, "status": "done", "result_key": f"users/{w.alice.user['id']}/jobs/{w.active}/results/0.png"}), 422, "invalid_request"),
    Case("done with another result key", lambda w: callback(w.url, w.active, {
        "item": 0, "status": "done", "result_key": f"users/{w.bob.user['id']}/jobs/{w.bob_job}/inputs/0"}), 422, "invalid_request"),
    Case("callback for an item out of range", lambda w: callback(w.url, w.active, {"item": 7, "status": "running"}), 422, "invalid_request"),
    Case("callback with an unknown status", lambda w: callback(w.url, w.active, {"item": 0, "status": "exploded"}), 422, "invalid_request"),
    Case("callback body that is not JSON", lambda w: callback(w.url, w.active, None, raw=b"item=0&status=done"), 422, "invalid_request"),
    Case("callback body over the limit", lambda w: callback(w.url, w.active, None, raw=b"{" + b" " * 2_000_000 + b"}"), 413, "too_large"),
    Case("callback signed for another job", lambda w: callback(w.url, w.active, {"job_id": w.bob_job, "item": 0, "status": "failed",
                                                                            "error": "x"}), 422, "invalid_request"),
    Case("callback that names no job", lambda w: callback(w.url, w.active, None, raw=b'{"item": 0, "attempt": 1, "status": "running"}'),
         422, "invalid_request"),
    Case("callback from an attempt never handed out", lambda w: callback(w.url, w.active, {"item": 0, "attempt": 9, "status": "failed",
                                                                                      "error": "x"}), 422, "invalid_request"),
    Case("result upload signed for another job", lambda w: signed_post(w.url, f"/jobs/{w.active}/result-upload", {
        "job_id": w.bob_job, "item": 0, "attempt": 1, "size": 10}), 422, "invalid_request"),
    # ---- remote workers --------------------------------------------------------------------------------------
    Case("claim without a signature", lambda w: httpx.post(f"{w.url}/workers/claim", json={"limit": 1}), 401, "unauthorized"),
    Case("claim that waits a minute", lambda w: signed_post(w.url, "/workers/claim", {"wait": 60}), 422, "invalid_request"),
    Case("claim of no tasks", lambda w: signed_post(w.url, "/workers/claim", {"limit": 0}), 422, "invalid_request"),
    Case("claim with an unknown field", lambda w: signed_post(w.url, "/workers/claim", {"limit": 1, "queue": "gpu"}), 422, "invalid_request"),
    Case("claim body that is not JSON", lambda w: signed_post(w.url, "/workers/claim", None, raw=b"limit=1"), 422, "invalid_request"),
    Case("heartbeat for an unknown job", lambda w: signed_post(w.url, "/workers/heartbeat", {"job_id": "no-such-job", "item": 0,
                                                                                         "attempt": 1}), 404, "not_found"),
    Case("heartbeat with a text item", lambda w: signed_post(w.url, "/workers/heartbeat", {"job_id": w.active, "item": "0",
                                                                                       "attempt": 1}), 422, "invalid_request"),
    Case("heartbeat without an attempt", lambda w: signed_post(w.url, "/workers/heartbeat", {"job_id": w.active, "item": 0}),
         422, "invalid_request"),
    Case("heartbeat for a task nobody claimed", lambda w: signed_post(w.url, "/workers/heartbeat", {"job_id": w.active, "item": 0,
                                                                                                "attempt": 1}), 409, "invalid_state"),
    # ---- routes ---------------------------------------------------------------------------------------------
    Case("unknown action on a job", lambda w: w.alice.post(f"/jobs/{w.active}/pause"), 404, "not_found"),
    Case("unknown path under the API", lambda w: w.alice.get("/rules/1/history"), 404, "not_found"),
    Case("wrong method", lambda w: w.alice.delete("/me"), 405, "method_not_allowed"),
    Case("unknown preset", lambda w: httpx.get(f"{w.url}/presets/..%2F..%2Fsettings"), 404, "not_found"),
    Case("preset in an unknown language", lambda w: httpx.get(f"{w.url}/presets/interior", params={"lang": "xx"}), 422, "invalid_request"),
]


def snapshot(w: World) -> dict:
    "Everything either user can see, plus which of alice's input objects exist."
    state = {}
    for name, client in (("alice", w.alice), ("bob", w.bob)):
        state[name] = {"me": client.me(), "rules": client.get("/rules").json(), "jobs": client.get("/jobs").json()}
        state[name]["job details"] = [client.get(f"/jobs/{job['id']}").json() for job in state[name]["jobs"]]
        for details in state[name]["job details"]:
            for entry in details["items"]: entry["result_url"] = entry["result_url"] is not None  # fresh signature every read
    objects = w.server.data_dir / "storage" / "objects"
    state["objects"] = sorted(str(p.relative_to(objects)) for p in objects.rglob("*") if p.is_file())
    return state


def test_there_are_enough_cases():
    assert len(CASES) >= 30 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(world, case):
    before = snapshot(world)
    answer = case.send(world)
    assert error_of(answer) == (case.status, case.code), f"{answer.status_code} {answer.text[:500]}"
    if case.code is not None:
        assert answer.headers["content-type"] == "application/json" and answer.json()["error"]["message"]
    else:
        assert answer.json() == case.body
    assert snapshot(world) == before
