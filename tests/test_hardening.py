"""What an attacker or an unlucky operator did to a real server, each case reproduced over HTTP: small uploads
that decode to gigabytes, anonymous Gradio uploads, CORS reflected by Gradio's routes, formats that are not photos,
reports delivered to the wrong job or from an old attempt, uploads overwritten after confirmation, and pages
without security headers. Each test failed on the code before the fix."""
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from api_server import CALLBACK_SECRET, Client, ServerProcess, error_of, png_bytes
from s3lib.auth import sign_callback
from s3lib.server import gradio_upload_folder
from s3lib.core import load_settings

pytestmark = pytest.mark.timeout(600)

LEASE_SECONDS = 5
UPLOADS_PER_MINUTE = 8
MAX_BYTES = 3 * 1024 * 1024
RULE = {"edits": [{"concept": "wall", "action": "recolor", "color": "#EDE6DA"}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "The real app (Gradio mounted) with the external runner: the tests play the remote workers."
    process = ServerProcess(tmp_path_factory.mktemp("hardening") / "data", {
        "S3LIB_RUNNER": "external", "S3LIB_RUNNER_LEASE_SECONDS": str(LEASE_SECONDS),
        "S3LIB_PLAN_FREE_MAX_CONCURRENT_JOBS": "4", "S3LIB_LIMITS_JOBS_PER_MINUTE": "1000",
        "S3LIB_LIMITS_SIGNUPS_PER_MINUTE": "1000", "S3LIB_LIMITS_UPLOADS_PER_MINUTE": str(UPLOADS_PER_MINUTE),
        "S3LIB_IMAGES_MAX_BYTES": str(MAX_BYTES)}).start()
    yield process
    assert process.stop(), process.log_tail()
    assert "Traceback" not in process.log_path.read_text(encoding="utf-8", errors="replace"), process.log_tail()


def encoded(picture: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format, **options)
    return buffer.getvalue()


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def signed(url: str, path: str, body: dict, **signing) -> httpx.Response:
    raw = json.dumps(body).encode()
    return httpx.post(f"{url}{path}", content=raw, headers=sign_callback(raw, CALLBACK_SECRET, **signing), timeout=60)


def claim(url: str, wait: float = 0) -> list[dict]:
    answer = signed(url, "/workers/claim", {"limit": 16, "wait": wait})
    assert answer.status_code == 200, answer.text
    return answer.json()["tasks"]


def executed_job(user: Client, photos: list[bytes]) -> str:
    job_id = user.uploaded_job(photos, rule=RULE)
    assert user.post(f"/jobs/{job_id}/execute").status_code == 202
    return job_id


# ---- 1. memory: a 40-megapixel PNG of ~100 kB costs nothing to verify -----------------------------------------------------
def test_confirming_big_small_pngs_costs_bounded_memory(server):
    picture = Image.new("RGB", (8000, 5000), (220, 215, 205))
    picture.paste((120, 90, 60), (0, 3000, 8000, 5000))  # a floor, so the file is not all one colour
    photo = encoded(picture, "PNG")
    assert len(photo) < MAX_BYTES
    users = [Client(server.url).sign_up() for _ in range(4)]
    jobs = []
    for user in users:
        job = user.create_job([photo], rule=RULE)
        user.upload(job, [photo])
        jobs.append((user, job["id"]))
    pid, baseline, peak, done = server.process.pid, rss_bytes(server.process.pid), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes(pid))
            time.sleep(0.02)
    sampler = threading.Thread(target=sample)
    sampler.start()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda pair: pair[0].post(f"/jobs/{pair[1]}/confirm-upload"), jobs))
    done.set()
    sampler.join()
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert peak[0] - baseline < 300 * 2**20, f"RSS grew by {(peak[0] - baseline) / 2**20:.0f} MB"  # was ~2.1 GB


# ---- 2. Gradio's upload route: bounded, rate-limited, cleaned, no data dir in answers ---------------------------------------
def gradio_upload(url: str, data: bytes, name: str = "room.png", headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{url}/gradio_api/upload", files={"files": (name, data, "image/png")}, headers=headers, timeout=60)


def test_gradio_uploads_are_bounded_limited_and_cleaned(server):
    too_big = gradio_upload(server.url, b"\0" * (MAX_BYTES + 10))
    assert too_big.status_code == 413, too_big.text
    kept = gradio_upload(server.url, png_bytes())
    assert kept.status_code == 200, kept.text
    settings = load_settings(env={"S3LIB_DATA_DIR": str(server.data_dir)})
    folder = gradio_upload_folder(settings)
    assert kept.json()[0].startswith(str(folder)) and str(server.data_dir) not in kept.text
    assert any(folder.rglob("room.png"))
    answers = [gradio_upload(server.url, png_bytes()).status_code for _ in range(UPLOADS_PER_MINUTE)]
    assert answers[-1] == 429 and 200 in answers, answers
    limited = gradio_upload(server.url, png_bytes())
    assert error_of(limited) == (429, "rate_limited") and int(limited.headers["retry-after"]) >= 1
    # the limit counts the connecting address: a made-up X-Forwarded-For (no trusted proxy is configured) is not a new client
    disguised = gradio_upload(server.url, png_bytes(), headers={"X-Forwarded-For": "203.0.113.9"})
    assert error_of(disguised) == (429, "rate_limited")


# ---- 3 and 8. one CORS policy and the security headers, Gradio's routes included --------------------------------------------
@pytest.mark.parametrize("path", ["/", "/gradio_api/info", "/config", "/presets"])
def test_one_cors_policy_and_security_headers_everywhere(server, path):
    for origin in ("https://evil.example", "null"):
        answer = httpx.get(f"{server.url}{path}", headers={"Origin": origin, "Host": "s3lib.example.com"}, timeout=30)
        assert not [h for h in answer.headers if h.startswith("access-control-")], (path, origin, answer.headers)
        assert answer.headers["content-security-policy"].startswith("frame-ancestors 'self'")
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    preflight = httpx.options(f"{server.url}/gradio_api/queue/join", headers={
        "Origin": "null", "Host": "s3lib.example.com", "Access-Control-Request-Method": "POST"}, timeout=30)
    assert error_of(preflight) == (403, "cors_refused") and "access-control-allow-origin" not in preflight.headers


# ---- 4. only JPEG, PNG and WebP, of the declared type, one frame --------------------------------------------------------------
def test_confirm_refuses_what_is_not_the_declared_photo(server):
    user = Client(server.url).sign_up()
    still = Image.new("RGB", (40, 30), (200, 180, 160))
    gif = encoded(Image.new("P", (40, 30)), "GIF", save_all=True,
                  append_images=[Image.new("P", (40, 30), i % 200) for i in range(1, 1000)])
    photos = [encoded(still, "JPEG"), gif, encoded(still, "TIFF"), encoded(still, "BMP"),
              encoded(Image.new("RGB", (32, 32)), "ICO"), encoded(still, "PNG")]
    job = user.create_job(photos, rule=RULE)  # every item declared (and signed) as image/png
    user.upload(job, photos)
    refused = user.post(f"/jobs/{job['id']}/confirm-upload")
    assert error_of(refused) == (422, "invalid_image") and refused.json()["error"]["items"] == [0, 1, 2, 3, 4], refused.text
    message = refused.json()["error"]["message"]
    for text in ("0: the file is a JPEG image (image/jpeg) but was declared as image/png", "1: the file is a GIF image",
                 "2: the file is a TIFF image", "3: the file is a BMP image"):
        assert text in message, message
    assert user.get(f"/jobs/{job['id']}").json()["status"] == "created"
    animated = encoded(still, "PNG", save_all=True, append_images=[Image.new("RGB", (40, 30))])
    job = user.create_job([animated], rule=RULE)
    user.upload(job, [animated])
    refused = user.post(f"/jobs/{job['id']}/confirm-upload")
    assert error_of(refused) == (422, "invalid_image") and "animated PNG with 2 frames" in refused.text


# ---- 5. a report says which job it is about --------------------------------------------------------------------------------------
def test_a_report_for_one_job_sent_to_another_changes_nothing(server):
    user = Client(server.url).sign_up()
    p_job, q_job = executed_job(user, [png_bytes()]), executed_job(user, [png_bytes()])
    body = {"job_id": p_job, "item": 0, "attempt": 1, "status": "failed", "error": "out of memory"}
    raw = json.dumps(body).encode()
    headers = sign_callback(raw, CALLBACK_SECRET, msg_id="msg_failed_for_p")
    misdelivered = httpx.post(f"{server.url}/jobs/{q_job}/callback", content=raw, headers=headers)
    assert error_of(misdelivered) == (422, "invalid_request") and "job_id" in misdelivered.text
    assert user.get(f"/jobs/{q_job}").json()["status"] == "queued"
    genuine = httpx.post(f"{server.url}/jobs/{p_job}/callback", content=raw, headers=headers)
    assert genuine.json() == {"ok": True, "duplicate": False}, genuine.text
    p_status = user.get(f"/jobs/{p_job}").json()
    assert (p_status["status"], p_status["credits_refunded"]) == ("failed", 1)
    unbound = signed(server.url, f"/jobs/{q_job}/result-upload", {"job_id": p_job, "item": 0, "attempt": 1, "size": 10})
    assert error_of(unbound) == (422, "invalid_request")
    assert user.post(f"/jobs/{q_job}/cancel").status_code == 200


# ---- 6 and 7. late reports of an old attempt; what was confirmed is what is processed -------------------------------------------
def test_superseded_attempts_and_overwrites_after_confirm_change_nothing(server):
    user = Client(server.url).sign_up()
    original = png_bytes(48, 32, color=(10, 20, 30))
    job = user.create_job([original], rule=RULE)
    user.upload(job, [original])
    assert user.post(f"/jobs/{job['id']}/confirm-upload").status_code == 200
    overwrite = httpx.put(job["uploads"][0]["url"], content=bytes(len(original)), headers=job["uploads"][0]["headers"])
    assert error_of(overwrite) == (409, "invalid_state")  # the local store refuses it; an S3 URL would still take it…
    assert user.post(f"/jobs/{job['id']}/execute").status_code == 202
    deadline, first = time.monotonic() + 30, []
    while not first and time.monotonic() < deadline:
        first = [t for t in claim(server.url, wait=2) if t["job_id"] == job["id"]]
    assert [t["attempt"] for t in first] == [1]
    assert httpx.get(first[0]["input_url"]).content == original  # …and write where nothing reads
    assert signed(server.url, f"/jobs/{job['id']}/callback", {"job_id": job["id"], "item": 0, "attempt": 1,
                                                                 "status": "running"}).json()["ok"]
    time.sleep(LEASE_SECONDS + 1)  # attempt 1 stops renewing its lease: the task goes back to the queue
    second = [t for t in claim(server.url, wait=2) if t["job_id"] == job["id"]]
    assert [t["attempt"] for t in second] == [2]
    late = signed(server.url, f"/jobs/{job['id']}/callback", {"job_id": job["id"], "item": 0, "attempt": 1,
                                                              "status": "failed", "error": "late"})
    assert late.json()["ignored"] == "attempt 1 of item 0 was superseded by attempt 2", late.text
    lost = signed(server.url, "/workers/heartbeat", {"job_id": job["id"], "item": 0, "attempt": 1})
    assert error_of(lost) == (409, "invalid_state")
    assert signed(server.url, "/workers/heartbeat", {"job_id": job["id"], "item": 0, "attempt": 2}).json()["ok"]
    assert user.get(f"/jobs/{job['id']}").json()["items"][0]["status"] == "running"
    assert user.post(f"/jobs/{job['id']}/cancel").json()["credits_refunded"] == 1
