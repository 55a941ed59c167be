"""Every field of every JSON body, replaced by each kind of JSON value it should not be, over real HTTP: a 4xx naming
the problem, never a 500, and nothing in the log. The bodies are valid as sent (checked first), so each mutation
reaches the check of the field it breaks. Also: retried confirmations racing each other all succeed."""
import base64
import copy
from concurrent.futures import ThreadPoolExecutor

import pytest

from api_server import Client, ServerProcess, png_bytes

pytestmark = pytest.mark.timeout(600)

PHOTO = png_bytes(40, 30)
WRONG = ([], {}, None, True, 1.5, -1, 10 ** 30, "", "\u200b", "x" * 5000)
RULE = {"name": "warm walls", "domain": "interior", "protect": ["person"],
        "edits": [{"concept": "wall", "action": "recolor", "color": "#EDE6DA"},
                  {"concept": "floor", "action": "material", "name": "oak"}]}
ITEM = {"filename": "room.png", "content_type": "image/png", "size": len(PHOTO), "protected": ["sofa:0"]}
INTERIOR_JOB = {"domain": "interior", "rule": {k: RULE[k] for k in ("edits", "protect")}, "items": [ITEM],
                "thresholds": {"wall": 0.4}, "disclosure": {"enabled": True, "language": "en"}}
SELLER_JOB = {"domain": "seller", "rule": {"edits": [{"concept": "background", "action": "fill", "color": "#FFFFFF"}]},
              "items": [ITEM | {"protected": []}], "fit": "amazon"}
IMAGE = base64.b64encode(PHOTO).decode()
SEGMENT = {"image": IMAGE, "domain": "interior", "concepts": ["wall", "floor"], "thresholds": {"wall": 0.4}, "overlay": False}
PREVIEW = {"image": IMAGE, "rule": RULE, "protected": ["sofa:0"], "thresholds": {"wall": 0.4}}


def paths(value, at=()):
    "Every place in a JSON value: the value itself, then each key or index inside it, depth first."
    yield at
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children: yield from paths(child, (*at, key))


def mutations(body):
    "(where, wrong value, the body with it there) for every place but the whole body."
    for at in list(paths(body))[1:]:
        for wrong in WRONG:
            changed = copy.deepcopy(body)
            holder = changed
            for key in at[:-1]: holder = holder[key]
            holder[at[-1]] = copy.deepcopy(wrong)
            yield at, wrong, changed


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_sam3):
    process = ServerProcess(tmp_path_factory.mktemp("wrong-types") / "data",
                            {"S3LIB_MODEL": str(tiny_sam3), "S3LIB_RUNNER": "external",
                             "S3LIB_LIMITS_JOBS_PER_MINUTE": "100000"}).start()
    yield process
    assert process.stop(), process.log_tail()
    assert "Traceback" not in process.log_path.read_text(encoding="utf-8", errors="replace"), process.log_tail()


def check_every_mutation(send, body):
    "Send the body as is (it must be accepted), then each mutation: none may answer 5xx."
    accepted = send(body)
    assert accepted.status_code < 300, accepted.text
    failures = []
    for at, wrong, changed in mutations(body):
        answer = send(changed)
        if answer.status_code >= 500: failures.append(f"{'.'.join(map(str, at))} = {wrong!r:.40}: {answer.status_code} {answer.text[:200]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("body", [INTERIOR_JOB, SELLER_JOB], ids=["interior", "seller"])
def test_job_bodies(server, body):
    client = Client(server.url).sign_up()
    check_every_mutation(lambda changed: client.post("/jobs/quote", json=changed), body)


def test_rule_bodies(server):
    client = Client(server.url).sign_up()
    saved = client.post("/rules", json=RULE)
    assert saved.status_code == 201, saved.text
    check_every_mutation(lambda changed: client.put(f"/rules/{saved.json()['id']}", json=changed), RULE)


@pytest.mark.parametrize("path, body", [("/segment", SEGMENT), ("/preview", PREVIEW)], ids=["segment", "preview"])
def test_model_bodies(server, path, body):
    client = Client(server.url).sign_up()
    check_every_mutation(lambda changed: client.post(path, json=changed), body)


def test_confirmations_racing_each_other_all_succeed(server):
    "A client retrying confirm-upload while the first is still checking: every call says uploaded, none a false error."
    client = Client(server.url).sign_up()
    photos = [png_bytes(40, 30, (i * 60, 90, 40)) for i in range(3)]
    for _ in range(3):
        job = client.create_job(photos)
        client.upload(job, photos)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: client.post(f"/jobs/{job['id']}/confirm-upload"), range(8)))
        assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers if a.status_code != 200]
        assert client.get(f"/jobs/{job['id']}").json()["status"] == "uploaded"
