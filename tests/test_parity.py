"""REST and the Gradio API are generated from one operation table (`s3lib.operations.OPERATIONS`). This test walks that
table against one real server (`python app.py`, tiny SAM 3, thresholds at 0) and checks, for every operation both
surfaces offer, that both answer the same way: a success succeeds (with the same JSON where the answer is
deterministic), no token gives `unauthorized`, another user's id gives `not_found`, and a bad input gives the same
error code. An operation added to the table without a case here fails `test_every_operation_has_cases`."""
import base64
import re
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from api_server import ServerProcess, png_bytes
from s3lib import testing
from s3lib.operations import OPERATIONS, operations

pytestmark = pytest.mark.timeout(900)

RULE = {"name": "Sage walls", "domain": "interior", "edits": [{"concept": "wall", "action": "recolor", "color": "#A8B197"}],
        "protect": ["person"]}
BAD_RULE = {"name": "Nowhere", "domain": "nowhere", "edits": [{"concept": "wall", "action": "recolor", "color": "#A8B197"}]}
LONG_ID = "x" * 101  # over every id's maxLength
PHOTO = png_bytes(96, 64)
CLIENTS: list = []


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_sam3):
    root = tmp_path_factory.mktemp("parity")
    presets = testing.zero_threshold_presets(Path(__file__).resolve().parent.parent / "presets", root / "presets")
    process = ServerProcess(root / "data", {"S3LIB_RUNNER": "inline", "GRADIO_HEARTBEAT_INTERVAL": "1", "S3LIB_LIMITS_SIGNUPS_PER_MINUTE": "100000", "S3LIB_MODEL": str(tiny_sam3),
                                            "S3LIB_PRESETS_DIR": str(presets)}).start()
    yield process
    while CLIENTS: CLIENTS.pop().close()
    assert process.stop(), process.log_tail()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "room.png"
    path.write_bytes(PHOTO)
    return path


class Surfaces:
    "Calls one operation on REST (httpx) or on the Gradio API (gradio_client) and reduces the answer to (outcome, value)."

    def __init__(self, server, photo: Path, downloads: Path):
        self.server, self.photo, self.downloads = server, photo, downloads
        self.http = httpx.Client(base_url=server.url, timeout=120)
        self.gradio_clients: dict = {}

    def sign_up(self) -> str:
        answer = self.http.post("/auth/anon")
        assert answer.status_code == 201, answer.text
        return answer.json()["token"]

    def rest(self, name: str, token: str | None, values: dict):
        operation = next(o for o in OPERATIONS if o.name == name)
        path, query, body = operation.path, {}, None
        for given in operation.inputs:
            if given.name not in values: continue
            value = values[given.name]
            if given.image: value = base64.b64encode(self.photo.read_bytes()).decode()
            if given.place == "path": path = path.replace("{" + given.name + "}", str(value))
            elif given.place == "query": query[given.name] = value
            elif given.place == "whole": body = value
            else: body = {**(body or {}), given.name: value}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = self.http.request(operation.method, path, params=query, json=body, headers=headers)
        if answer.status_code >= 400:
            return "error", answer.json()["error"]["code"]
        if answer.status_code == 204 or not answer.headers.get("content-type", "").startswith("application/json"):
            return "ok", None
        return "ok", answer.json()

    def gradio(self, name: str, token: str | None, values: dict):
        if token not in self.gradio_clients:
            client = Client(self.server.url, headers={"x-s3lib-token": token} if token else {}, verbose=False,
                            analytics_enabled=False, download_files=str(self.downloads))
            CLIENTS.append(client)
            self.gradio_clients[token] = client
        operation = next(o for o in OPERATIONS if o.name == name)
        arguments = {k: handle_file(str(self.photo)) if operation.input(k).image else v for k, v in values.items()}
        try: answer = self.gradio_clients[token].predict(**arguments, api_name=f"/{name}")
        except AppError as error:
            return "error", str(error).split(":", 1)[0]
        if isinstance(answer, str) and Path(answer).exists(): return "ok", None  # a file: its bytes are checked elsewhere
        return "ok", answer

    def both(self, name: str, token: str | None, values: dict) -> tuple:
        return self.rest(name, token, values), self.gradio(name, token, values)


@pytest.fixture(scope="module")
def surfaces(server, photo, tmp_path_factory):
    return Surfaces(server, photo, tmp_path_factory.mktemp("downloads"))


@pytest.fixture(scope="module")
def alice(surfaces):
    "A user with one saved rule and one finished job."
    token = surfaces.sign_up()
    headers = {"Authorization": f"Bearer {token}"}
    rule = surfaces.http.post("/rules", json=RULE, headers=headers).json()
    job = prepared_job(surfaces, token, confirm=True)
    assert surfaces.http.post(f"/jobs/{job}/execute", headers=headers).status_code == 202
    deadline = time.monotonic() + 240
    while surfaces.http.get(f"/jobs/{job}", headers=headers).json()["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.3)
    return {"token": token, "rule_id": rule["id"], "job_id": job}


def prepared_job(surfaces, token: str, upload: bool = True, confirm: bool = False) -> str:
    "A one-photo job made through REST (uploaded, optionally confirmed); its id."
    headers = {"Authorization": f"Bearer {token}"}
    body = {"domain": "interior", "rule": {"edits": RULE["edits"]}, "thresholds": {"wall": 0.0},
            "items": [{"filename": "room.png", "content_type": "image/png", "size": len(PHOTO)}]}
    job = surfaces.http.post("/jobs", json=body, headers=headers).json()
    if upload:
        for target in job["uploads"]: assert httpx.put(target["url"], content=PHOTO, headers=target["headers"]).status_code == 200
    if confirm: assert surfaces.http.post(f"/jobs/{job['id']}/confirm-upload", headers=headers).status_code == 200
    return job["id"]


def job_body() -> dict:
    return {"domain": "interior", "rule": {"edits": RULE["edits"]},
            "items": [{"filename": "room.png", "content_type": "image/png", "size": len(PHOTO)}]}


# For each operation: how to make a successful call (given the surfaces, alice's state and a fresh user's token: the
# values, and the token to call with), the bad input both surfaces must refuse, and whether its success answer is the
# same JSON on both (answers that hold fresh ids or timestamps are compared by their keys only).
SUCCESS = {
    "auth_anon": lambda s, a, fresh: ({}, None),
    "me": lambda s, a, fresh: ({}, a["token"]),
    "presets": lambda s, a, fresh: ({"lang": "ko"}, None),
    "preset": lambda s, a, fresh: ({"preset_id": "seller", "lang": "en"}, None),
    "segment": lambda s, a, fresh: ({"image": "PHOTO", "domain": "interior", "concepts": ["wall", "floor"],
                                     "thresholds": {"wall": 0.0, "floor": 0.0}, "overlay": False}, a["token"]),
    "preview": lambda s, a, fresh: ({"image": "PHOTO", "rule": RULE, "thresholds": {"wall": 0.0}}, a["token"]),
    "rules_list": lambda s, a, fresh: ({}, a["token"]),
    "rules_get": lambda s, a, fresh: ({"rule_id": a["rule_id"]}, a["token"]),
    "rules_create": lambda s, a, fresh: ({"rule": RULE}, fresh),
    "rules_update": lambda s, a, fresh: ({"rule_id": a["rule_id"], "rule": RULE}, a["token"]),
    "rules_delete": lambda s, a, fresh: ({"rule_id": s.http.post("/rules", json=RULE, headers={"Authorization": f"Bearer {fresh}"}).json()["id"]}, fresh),
    "job_prepare": lambda s, a, fresh: ({"job": job_body()}, fresh),
    "job_quote": lambda s, a, fresh: ({"job": job_body()}, fresh),
    "webhook_secret": lambda s, a, fresh: ({}, a["token"]),
    "jobs": lambda s, a, fresh: ({"limit": 5}, a["token"]),
    "job_status": lambda s, a, fresh: ({"job_id": a["job_id"]}, a["token"]),
    "job_confirm": lambda s, a, fresh: ({"job_id": prepared_job(s, fresh)}, fresh),
    "job_execute": lambda s, a, fresh: ({"job_id": prepared_job(s, fresh, confirm=True)}, fresh),
    "job_cancel": lambda s, a, fresh: ({"job_id": prepared_job(s, fresh, upload=False)}, fresh),
    "export": lambda s, a, fresh: ({"job_id": a["job_id"]}, a["token"]),
}
SAME_JSON = {"me", "presets", "preset", "segment", "rules_list", "rules_get", "jobs", "job_status", "job_quote", "webhook_secret"}
BAD = {
    "presets": ({"lang": "fr"}, "invalid_request"),
    "preset": ({"preset_id": "nowhere", "lang": "en"}, "not_found"),
    "segment": ({"image": "PHOTO", "domain": "interior", "concepts": []}, "invalid_request"),
    "preview": ({"image": "PHOTO", "rule": BAD_RULE}, "invalid_rule"),
    "rules_get": ({"rule_id": LONG_ID}, "invalid_request"),
    "rules_create": ({"rule": BAD_RULE}, "invalid_rule"),
    "rules_update": ({"rule_id": "RULE", "rule": BAD_RULE}, "invalid_rule"),
    "rules_delete": ({"rule_id": LONG_ID}, "invalid_request"),
    "job_prepare": ({"job": {**job_body(), "items": []}}, "invalid_request"),
    "job_quote": ({"job": {**job_body(), "domain": "nowhere"}}, "invalid_request"),
    "jobs": ({"limit": 0}, "invalid_request"),
    "job_status": ({"job_id": LONG_ID}, "invalid_request"),
    "job_confirm": ({"job_id": LONG_ID}, "invalid_request"),
    "job_execute": ({"job_id": LONG_ID}, "invalid_request"),
    "job_cancel": ({"job_id": LONG_ID}, "invalid_request"),
    "export": ({"job_id": LONG_ID}, "invalid_request"),
}
SHARED = [o.name for o in operations("rest") if "gradio" in o.surfaces]


def test_every_operation_has_cases():
    assert set(SUCCESS) == set(SHARED), "give every operation offered on both surfaces a success case"
    without_inputs = {o.name for o in OPERATIONS if not o.inputs}
    assert set(BAD) == set(SHARED) - without_inputs, "give every operation that takes inputs a bad-input case"


def keys_of(value):
    "The shape of an answer: dict keys (recursively), list lengths."
    if isinstance(value, dict): return {k: keys_of(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)): return [keys_of(v) for v in value]
    return type(value).__name__


@pytest.mark.parametrize("name", SHARED)
def test_success_is_the_same_on_both_surfaces(surfaces, alice, name):
    rest, gradio = [], []
    for answers, call in ((rest, surfaces.rest), (gradio, surfaces.gradio)):
        values, token = SUCCESS[name](surfaces, alice, surfaces.sign_up())
        answers.append(call(name, token, values))
    (rest_outcome, rest_value), (gradio_outcome, gradio_value) = rest[0], gradio[0]
    assert (rest_outcome, gradio_outcome) == ("ok", "ok"), (rest_value, gradio_value)
    if name == "segment": gradio_value = {"instances": gradio_value[0], "overlay": gradio_value[1]}
    if name == "job_status":  # presigned result URLs carry their own expiry and signature: compare where they point
        for value in (rest_value, gradio_value):
            for item in value["items"]: item["result_url"] = (item["result_url"] or "").split("?")[0]
    if name in SAME_JSON: assert rest_value == gradio_value
    elif rest_value is not None: assert keys_of(rest_value).keys() == keys_of(gradio_value).keys()


@pytest.mark.parametrize("name", [o.name for o in OPERATIONS if o.auth and o.name in SHARED])
def test_no_token_is_unauthorized_on_both(surfaces, alice, name):
    values, _ = SUCCESS[name](surfaces, alice, surfaces.sign_up())
    assert surfaces.both(name, None, values) == (("error", "unauthorized"), ("error", "unauthorized"))


@pytest.mark.parametrize("name", [o.name for o in OPERATIONS if o.name in SHARED
                                  and {"rule_id", "job_id"} & {i.name for i in o.inputs}])
def test_another_users_id_is_not_found_on_both(surfaces, alice, name):
    values, _ = SUCCESS[name](surfaces, alice, surfaces.sign_up())
    values = {**values, **{k: alice[k] for k in ("rule_id", "job_id") if k in values}}
    stranger = surfaces.sign_up()
    assert surfaces.both(name, stranger, values) == (("error", "not_found"), ("error", "not_found"))


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_input_is_refused_alike_on_both(surfaces, alice, name):
    values, code = BAD[name]
    values = {k: alice["rule_id"] if v == "RULE" else v for k, v in values.items()}
    assert surfaces.both(name, alice["token"], values) == (("error", code), ("error", code))


def test_openapi_documents_every_body(server):
    spec = httpx.get(f"{server.url}/openapi.json").json()
    for operation in operations("rest"):
        documented = spec["paths"][re.sub(r"{(\w+)}", r"{\1}", operation.path)][operation.method.lower()]
        assert documented["operationId"] == operation.name
        body = documented.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        takes_body = any(i.place in ("body", "whole") for i in operation.inputs)
        assert (body is not None) == takes_body, operation.name
        if takes_body: assert body.get("properties"), f"{operation.name}: the body's fields are not documented"
        assert {p["name"] for p in documented.get("parameters", [])} == {i.name for i in operation.inputs if i.place in ("path", "query")}
    edits = spec["paths"]["/rules"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["edits"]
    assert {branch["title"] for branch in edits["items"]["oneOf"]} >= {"recolor", "material", "fill", "remove", "blur", "adjust"}


def test_rest_has_what_only_gradio_had(surfaces, alice, photo):
    "POST /segment (instances + overlay), POST /preview (a PNG) and GET /jobs/{id}/export (the ZIP) over plain HTTP."
    import io, json, zipfile
    from PIL import Image
    headers, image = {"Authorization": f"Bearer {alice['token']}"}, base64.b64encode(PHOTO).decode()
    found = surfaces.http.post("/segment", json={"image": image, "domain": "interior", "concepts": ["wall"], "thresholds": {"wall": 0.0}},
                               headers=headers)
    assert found.status_code == 200, found.text
    assert found.json()["instances"] and set(found.json()["instances"][0]) == {"key", "concept", "index", "score", "box", "area"}
    overlay = found.json()["overlay"]
    assert overlay.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(overlay.split(",", 1)[1]))) as picture: assert picture.size == (96, 64)
    edited = surfaces.http.post("/preview", json={"image": f"data:image/png;base64,{image}", "rule": RULE, "thresholds": {"wall": 0.0}},
                                headers=headers)
    assert (edited.status_code, edited.headers["content-type"]) == (200, "image/png"), edited.text
    with Image.open(io.BytesIO(edited.content)) as picture: assert picture.size == (96, 64)
    exported = surfaces.http.get(f"/jobs/{alice['job_id']}/export", headers=headers)
    assert (exported.status_code, exported.headers["content-type"]) == (200, "application/zip"), exported.text
    assert f"s3lib-{alice['job_id']}.zip" in exported.headers["content-disposition"]
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(exported.content)).read("manifest.json"))
    assert [i["input"] for i in manifest["items"]] == ["room.png"]
    unknown = surfaces.http.post("/segment", json={"image": image, "domain": "interior", "concepts": ["wall"], "colour": "red"}, headers=headers)
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (422, "colour")
    assert surfaces.http.post("/segment", json={"image": "@@", "domain": "interior", "concepts": ["wall"]},
                              headers=headers).json()["error"]["field"] == "image"
