"""The Gradio API through gradio_client, against a real server subprocess (`python app.py`, tiny SAM 3,
every preset threshold at 0 so the random model finds instances): every named endpoint works with a token, fails
clearly without one, and one user's token never reaches another user's rules or jobs. Also: `/gradio_api/run/*` is
closed, a file the caller did not upload is refused, and a server whose model cannot load still serves everything that
needs no model while `segment` says why and how to fix it."""
import json
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw

from api_server import ServerProcess, free_port
from s3lib import testing

pytestmark = pytest.mark.timeout(600)

from s3lib.operations import operations
ENDPOINTS = {o.name for o in operations("gradio")}  # the operation table's, REST's too (tests/test_parity.py)
RULE = {"name": "Sage walls", "domain": "interior", "edits": [{"concept": "wall", "action": "recolor", "color": "#A8B197"}],
        "protect": ["person"]}
FINISHED = ("done", "failed", "canceled", "expired")
SERVER_ENV = {"S3LIB_RUNNER": "inline", "GRADIO_HEARTBEAT_INTERVAL": "1"}  # closed clients' heartbeats end within a second
CLIENTS: list = []  # every gradio_client opened, closed before the servers stop (an open heartbeat delays a clean stop)


def zero_threshold_presets(folder: Path) -> Path:
    "The shipped presets with every threshold at 0, so the random tiny model finds instances."
    return testing.zero_threshold_presets(Path(__file__).resolve().parent.parent / "presets", folder)


def room(path: Path, size=(160, 120), wall=(200, 190, 175)) -> Path:
    "A synthetic room: wall, floor, a sofa and a window."
    width, height = size
    picture = Image.new("RGB", size, wall)
    draw = ImageDraw.Draw(picture)
    draw.rectangle([0, int(0.7 * height), width, height], fill=(140, 100, 70))
    draw.rectangle([int(0.3 * width), int(0.45 * height), int(0.7 * width), int(0.75 * height)], fill=(70, 90, 120))
    draw.rectangle([int(0.1 * width), int(0.1 * height), int(0.25 * width), int(0.4 * height)], fill=(230, 230, 240))
    picture.save(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_sam3):
    root = tmp_path_factory.mktemp("ui-client")
    process = ServerProcess(root / "data", {**SERVER_ENV, "S3LIB_MODEL": str(tiny_sam3),
                                            "S3LIB_PRESETS_DIR": str(zero_threshold_presets(root / "presets"))}).start()
    yield process
    close_clients()
    assert process.stop(), process.log_tail()
    log = process.log_path.read_text(encoding="utf-8", errors="replace")  # the only tracebacks: Gradio logging the file path it refused (see below)
    assert log.count("Traceback") == log.count("InvalidPathError: Cannot move"), process.log_tail()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    return [room(folder / "living-room.png"), room(folder / "bedroom.png", wall=(180, 170, 160))]


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


def connect(server, downloads, token: str | None = None, bearer: bool = False) -> Client:
    "A gradio_client for one caller: the token in `x-s3lib-token` (or `Authorization: Bearer`), or none."
    headers = {} if token is None else {"Authorization": f"Bearer {token}"} if bearer else {"x-s3lib-token": token}
    client = Client(server.url, headers=headers, verbose=False, analytics_enabled=False, download_files=str(downloads))
    CLIENTS.append(client)
    return client


def close_clients() -> None:
    while CLIENTS: CLIENTS.pop().close()


def sign_up(server, downloads) -> tuple[Client, dict]:
    signed = connect(server, downloads).predict(api_name="/auth_anon")
    return connect(server, downloads, signed["token"]), signed


def wait_for(client: Client, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.predict(job_id, api_name="/job_status")
        if job["status"] in FINISHED or time.monotonic() > deadline: return job
        time.sleep(0.2)


def test_the_api_is_the_named_endpoints(server, downloads):
    api = connect(server, downloads).view_api(return_format="dict", print_info=False)
    assert {name.lstrip("/") for name in api["named_endpoints"]} == ENDPOINTS
    assert api["unnamed_endpoints"] == {}
    for name, endpoint in api["named_endpoints"].items():
        assert endpoint["description"], f"{name} has no description"
    assert api["named_endpoints"]["/segment"]["description"].startswith("Find concepts on a photo with SAM 3")
    assert [p["parameter_name"] for p in api["named_endpoints"]["/segment"]["parameters"]] == ["image", "domain", "concepts",
                                                                                               "thresholds", "overlay"]


def test_every_endpoint_works_with_a_token(server, photos, downloads):
    client, signed = sign_up(server, downloads)
    assert signed["user"]["credits"] == 30 and signed["token"].count(".") == 2
    me = client.predict(api_name="/me")
    assert me["id"] == signed["user"]["id"]
    assert connect(server, downloads, signed["token"], bearer=True).predict(api_name="/me")["id"] == me["id"]  # Bearer works too

    assert {p["id"] for p in client.predict("en", api_name="/presets")} == {"interior", "seller"}
    interior = client.predict("interior", "ko", api_name="/preset")
    assert next(c for c in interior["concepts"] if c["id"] == "wall")["label"] == "벽"

    instances, overlay = client.predict(handle_file(photos[0]), "interior", ["wall", "person"], {"wall": 0.0},
                                        api_name="/segment")
    assert instances and {i["concept"] for i in instances} <= {"wall", "person"}
    assert set(instances[0]) == {"key", "concept", "index", "score", "box", "area"}
    with Image.open(overlay) as picture: assert picture.size == (160, 120) and picture.format == "PNG"

    edited = client.predict(handle_file(photos[0]), RULE, ["wall:0"], {"wall": 0.0}, api_name="/preview")
    with Image.open(edited) as picture, Image.open(photos[0]) as original:
        assert picture.size == original.size
        assert (np.asarray(picture.convert("RGB")) != np.asarray(original.convert("RGB"))).any()  # the wall changed

    saved = client.predict(RULE, None, api_name="/rules_save")
    assert client.predict(api_name="/rules_list") == [saved]
    renamed = client.predict({**RULE, "name": "Greige walls"}, saved["id"], api_name="/rules_save")
    assert (renamed["id"], renamed["name"]) == (saved["id"], "Greige walls")
    assert client.predict(saved["id"], api_name="/rules_delete") == {"id": saved["id"], "deleted": True}
    assert client.predict(api_name="/rules_list") == []

    job = client.predict([handle_file(p) for p in photos], "interior", RULE, None, {"wall": 0.0}, None, api_name="/job_create")
    assert job["status"] in ("queued", "running", "done") and job["credits_reserved"] == 2
    job = wait_for(client, job["id"])
    assert (job["status"], job["progress"]) == ("done", {"total": 2, "done": 2, "failed": 0, "canceled": 0, "unchanged": 0})
    assert job["thresholds"]["wall"] == 0.0
    archive = zipfile.ZipFile(client.predict(job["id"], api_name="/export"))
    manifest = json.loads(archive.read("manifest.json"))
    assert [(i["input"], i["status"]) for i in manifest["items"]] == [("living-room.png", "done"), ("bedroom.png", "done")]
    assert {"results/living-room.png", "results/bedroom.png", "masks/living-room/wall-0.png", "instances.json"} <= set(archive.namelist())
    assert manifest["thresholds"]["wall"] == 0.0 and manifest["rule"]["edits"] == RULE["edits"]
    assert client.predict(api_name="/me")["credits"] == 28


def test_cancel_refunds(server, downloads, tmp_path):
    client, signed = sign_up(server, downloads)
    big = [handle_file(room(tmp_path / f"big-{i}.png", size=(1600, 1200))) for i in range(10)]
    job = client.predict(big, "interior", RULE, None, None, None, api_name="/job_create")
    canceled = client.predict(job["id"], api_name="/job_cancel")
    assert canceled["status"] == "canceled" and canceled["credits_refunded"] >= 1
    status = wait_for(client, job["id"])
    assert status["status"] == "canceled"
    assert client.predict(api_name="/me")["credits"] == 30 - status["credits_charged"]
    with pytest.raises(AppError, match="^invalid_state: "):
        client.predict(job["id"], api_name="/job_cancel")


CALLS = {  # endpoint -> arguments (files are filled in by the test)
    "me": [], "segment": ["PHOTO", "interior", ["wall"], None],
    "preview": ["PHOTO", RULE, None, None], "rules_list": [], "rules_save": [RULE, None], "rules_delete": ["some-rule"],
    "job_create": [["PHOTO"], "interior", RULE, None, None, None], "job_status": ["some-job"], "job_cancel": ["some-job"],
    "export": ["some-job"],
}


@pytest.mark.parametrize("endpoint", sorted(CALLS))
def test_without_a_token_every_endpoint_fails_clearly(server, photos, downloads, endpoint):
    def fill(value):
        if value == "PHOTO": return handle_file(photos[0])
        return [fill(v) for v in value] if isinstance(value, list) else value
    with pytest.raises(AppError, match=r"^unauthorized: no token: sign in first \(send `Authorization: Bearer <token>`"):
        connect(server, downloads).predict(*[fill(v) for v in CALLS[endpoint]], api_name=f"/{endpoint}")
    with pytest.raises(AppError, match="^unauthorized: "):
        connect(server, downloads, "not.a.token").predict(*[fill(v) for v in CALLS[endpoint]], api_name=f"/{endpoint}")


def test_presets_need_no_token_on_either_surface(server, downloads):
    "One policy: the presets are public, on the Gradio API as on GET /presets."
    assert {p["id"] for p in connect(server, downloads).predict("en", api_name="/presets")} == {"interior", "seller"}
    assert connect(server, downloads).predict("seller", "en", api_name="/preset")["checks"] == ["amazon", "ebay", "shopify", "etsy"]
    assert httpx.get(f"{server.url}/presets/seller").json()["checks"] == ["amazon", "ebay", "shopify", "etsy"]


def test_another_users_token_sees_nothing_of_the_first(server, photos, downloads):
    first, _ = sign_up(server, downloads)
    second, _ = sign_up(server, downloads)
    rule = first.predict(RULE, None, api_name="/rules_save")
    job = first.predict([handle_file(photos[0])], "interior", None, rule["id"], {"wall": 0.0}, None, api_name="/job_create")
    wait_for(first, job["id"])
    for endpoint, argument in (("job_status", job["id"]), ("job_cancel", job["id"]), ("export", job["id"]),
                               ("rules_delete", rule["id"])):
        with pytest.raises(AppError, match="^not_found: "):
            second.predict(argument, api_name=f"/{endpoint}")
    with pytest.raises(AppError, match="^not_found: "):
        second.predict([handle_file(photos[0])], "interior", None, rule["id"], None, None, api_name="/job_create")
    assert second.predict(api_name="/rules_list") == []
    assert first.predict(job["id"], api_name="/job_status")["status"] == "done"  # still there for its owner


def test_the_run_route_is_closed(server, downloads):
    _, signed = sign_up(server, downloads)
    answer = httpx.post(f"{server.url}/gradio_api/run/me", json={"data": []}, headers={"x-s3lib-token": signed["token"]})
    assert answer.status_code == 404


def call_raw(server, endpoint: str, data: list, token: str) -> str:
    "Call an endpoint over Gradio's HTTP protocol without gradio_client; the event stream's text."
    headers = {"x-s3lib-token": token}
    event = httpx.post(f"{server.url}/gradio_api/call/{endpoint}", json={"data": data}, headers=headers, timeout=30).json()
    return httpx.get(f"{server.url}/gradio_api/call/{endpoint}/{event['event_id']}", headers=headers, timeout=60).text


def test_a_file_the_caller_did_not_upload_is_refused(server, downloads):
    _, signed = sign_up(server, downloads)
    target = str(server.data_dir / "secrets.json")  # any file on the server, e.g. another user's result
    bare = call_raw(server, "segment", [{"path": target}, "interior", ["wall"], None, True], signed["token"])
    assert "event: error" in bare and "image was not uploaded to this app" in bare
    tagged = call_raw(server, "segment", [{"path": target, "meta": {"_type": "gradio.FileData"}}, "interior", ["wall"], None, True],
                      signed["token"])
    assert "event: error" in tagged and "event: complete" not in tagged
    assert "invalid_request: a file input was not uploaded to this app" in tagged, tagged  # said, not {"error": null}
    fetched = call_raw(server, "segment", [{"path": "http://203.0.113.7/room.png", "meta": {"_type": "gradio.FileData"}}, "interior",
                                           ["wall"], None, True], signed["token"])
    assert "invalid_request" in fetched and "are not fetched" in fetched, fetched
    unknown = httpx.post(f"{server.url}/gradio_api/call/no_such_endpoint", json={"data": []}, timeout=30)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found"), unknown.text
    no_event = httpx.post(f"{server.url}/gradio_api/queue/join", json={"data": [], "fn_index": 9999, "session_hash": "x"}, timeout=30)
    assert (no_event.status_code, no_event.json()["error"]["code"]) == (404, "not_found"), no_event.text
    too_few = call_raw(server, "segment", [], signed["token"])
    assert "invalid_request" in too_few and "needed: 5, got: 0" in too_few, too_few


@pytest.fixture(scope="module")
def modelless(tmp_path_factory):
    "A server whose SAM 3 cannot be loaded (the folder does not exist)."
    root = tmp_path_factory.mktemp("no-model")
    process = ServerProcess(root / "data", {**SERVER_ENV, "S3LIB_MODEL": str(root / "no-such-model")}).start()
    yield process
    close_clients()
    assert process.stop(), process.log_tail()


def test_without_the_model_the_app_starts_and_says_why(modelless, photos, downloads):
    assert httpx.get(modelless.url + "/").status_code == 200  # the page is served
    client, _ = sign_up(modelless, downloads)
    with pytest.raises(AppError, match=r"^model_unavailable: .*no-such-model"):
        client.predict(handle_file(photos[0]), "interior", ["wall"], None, api_name="/segment")
    assert client.predict(RULE, None, api_name="/rules_save")["name"] == RULE["name"]  # what needs no model still works
    assert client.predict("interior", "en", api_name="/preset")["id"] == "interior"


FAKE_SPACES = """
import os, sys
def note(line):
    with open(os.environ["FAKE_SPACES_LOG"], "a") as log: log.write(line + "\\n")
note(f"imported before torch: {'torch' not in sys.modules}")
def GPU(function=None, duration=60):
    def decorate(function):
        def on_gpu(*args, **kwargs):
            note(f"GPU call: {function.__name__}")
            return function(*args, **kwargs)
        return on_gpu
    return decorate(function) if callable(function) else decorate
"""


def test_the_spaces_launch(tiny_sam3, tmp_path, photos, downloads):
    """app.py with SPACE_ID set, as on Hugging Face Spaces (with a stand-in `spaces` package that logs what it is asked):
    `spaces` comes before torch, demo.launch() serves the page and the Gradio API, the REST API is added, and SAM 3 runs
    through the @spaces.GPU function."""
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "spaces.py").write_text(FAKE_SPACES)
    log, port = tmp_path / "spaces.log", free_port()
    process = ServerProcess(tmp_path / "data", {**SERVER_ENV, "S3LIB_MODEL": str(tiny_sam3), "SPACE_ID": "s3lib/palette",
                                                "SPACE_HOST": "s3lib-palette.hf.space", "GRADIO_SERVER_NAME": "127.0.0.1",
                                                "GRADIO_SERVER_PORT": str(port), "PYTHONPATH": str(tmp_path / "fake"),
                                                "FAKE_SPACES_LOG": str(log),
                                                "S3LIB_PRESETS_DIR": str(zero_threshold_presets(tmp_path / "presets"))},
                            port=port).start()
    try:
        page = httpx.get(process.url + "/", headers={"Origin": "null", "Host": "s3lib-palette.hf.space"})
        assert page.status_code == 200 and "access-control-allow-origin" not in page.headers  # the edge wraps the launched app
        assert page.headers["content-security-policy"] == "frame-ancestors 'self' https://huggingface.co"  # the Space's page frames it
        signed = httpx.post(process.url + "/auth/anon")  # a REST route on the app demo.launch() returned
        assert signed.status_code == 201
        client = connect(process, downloads, signed.json()["token"])
        assert client.predict(api_name="/me")["id"] == signed.json()["user"]["id"]
        instances, _ = client.predict(handle_file(photos[0]), "interior", ["wall"], None, api_name="/segment")
        assert instances  # SAM 3 through s3lib.ui.zerogpu.run_segmenter (a no-op @spaces.GPU here)
        job = client.predict([handle_file(photos[0])], "interior", RULE, None, None, None, api_name="/job_create")
        assert job["items"][0]["status"] in ("pending", "running", "done")
        job = wait_for(client, job["id"])
        assert job["status"] == "done" and job["items"][0]["result_url"].startswith("https://s3lib-palette.hf.space/objects/")
    finally:
        close_clients()
        process.stop()
    assert process.process.returncode == 0, process.log_tail()
    notes = log.read_text(encoding="utf-8", errors="replace").splitlines()
    assert notes[0] == "imported before torch: True" and "GPU call: run_segmenter" in notes, notes
