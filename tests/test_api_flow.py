"""The seed flow of the REST contract end to end over real HTTP: a server subprocess (`python app.py`) with the
tiny SAM 3, the inline runner and local storage; sign up → me → presets → rules → job → uploads → confirm →
execute → poll → download → credits; isolation between users; cancel; the 402 and 429 limits."""
import io
import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from api_server import Client, ServerProcess, error_of, png_bytes

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_sam3):
    "One server for the module. Its presets are the shipped ones with every threshold at 0, so the random tiny model finds instances."
    root = tmp_path_factory.mktemp("flow")
    presets = root / "presets"
    presets.mkdir()
    for source in (Path(__file__).resolve().parent.parent / "presets").glob("*.json"):
        preset = json.loads(source.read_text())
        for concept in preset["concepts"]: concept["threshold"] = 0.0
        (presets / source.name).write_text(json.dumps(preset))
    process = ServerProcess(root / "data", {"S3LIB_MODEL": str(tiny_sam3), "S3LIB_RUNNER": "inline", "S3LIB_PRESETS_DIR": str(presets),
                                            "S3LIB_LIMITS_SIGNUPS_PER_MINUTE": "1000"}).start()  # a user or two per test, from one address
    yield process
    assert process.stop(), process.log_tail()
    assert "Traceback" not in process.log_path.read_text(encoding="utf-8", errors="replace"), process.log_tail()


def user(server) -> Client:
    return Client(server.url).sign_up()


def test_sign_up_me_and_presets(server):
    alice = user(server)
    me = alice.me()
    assert me == alice.user
    assert (me["plan"], me["credits"], me["active_jobs"], me["rules_used"]) == ("free", 30, 0, 0)
    assert me["limits"] == {"max_concurrent_jobs": 1, "max_rules": 2, "max_batch": 10, "credits_per_image": 1}

    presets = httpx.get(f"{server.url}/presets")  # no token needed
    assert presets.status_code == 200
    assert {p["id"] for p in presets.json()} == {"interior", "seller"} and all(p["name"] for p in presets.json())
    interior = httpx.get(f"{server.url}/presets/interior").json()
    wall = next(c for c in interior["concepts"] if c["id"] == "wall")
    assert {"id", "label", "prompt", "actions"} <= set(wall) and "recolor" in wall["actions"]
    assert "person" in interior["protect_defaults"]
    assert error_of(httpx.get(f"{server.url}/presets/garden")) == (404, "not_found")


def test_rule_crud_with_two_slots(server):
    alice, bob = user(server), user(server)
    rule = {"name": "warm walls", "domain": "interior", "protect": ["person"],
            "edits": [{"concept": "wall", "action": "recolor", "color": "#EDE6DA"}]}
    first = alice.post("/rules", json=rule)
    assert first.status_code == 201, first.text
    saved = first.json()
    assert {"id", "name", "domain", "edits", "protect", "created_at", "updated_at"} <= set(saved)
    assert (saved["name"], saved["domain"], saved["protect"], saved["edits"][0]["concept"]) == ("warm walls", "interior", ["person"], "wall")
    second = alice.post("/rules", json=rule | {"name": "floors", "edits": [{"concept": "floor", "action": "material", "name": "oak"}]})
    assert second.status_code == 201, second.text
    third = alice.post("/rules", json=rule | {"name": "one too many"})
    assert error_of(third) == (403, "plan_limit")
    assert alice.me()["rules_used"] == 2

    assert [r["id"] for r in alice.get("/rules").json()] == [saved["id"], second.json()["id"]]
    assert alice.get(f"/rules/{saved['id']}").json() == saved
    changed = alice.put(f"/rules/{saved['id']}", json=rule | {"name": "cool walls", "edits": [
        {"concept": "wall", "action": "recolor", "color": "#9DB4C0"}]})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["edits"][0]["color"].upper()) == ("cool walls", "#9DB4C0")
    assert changed.json()["created_at"] == saved["created_at"] and changed.json()["updated_at"] >= saved["updated_at"]

    for attempt in (bob.get(f"/rules/{saved['id']}"), bob.put(f"/rules/{saved['id']}", json=rule),
                    bob.delete(f"/rules/{saved['id']}")):
        assert error_of(attempt) == (404, "not_found")
    assert bob.get("/rules").json() == []

    assert alice.delete(f"/rules/{saved['id']}").status_code == 204
    assert error_of(alice.get(f"/rules/{saved['id']}")) == (404, "not_found")
    assert alice.me()["rules_used"] == 1
    assert alice.post("/rules", json=rule | {"name": "slot is free again"}).status_code == 201


def test_job_end_to_end(server):
    "create → PUT uploads → confirm → execute → poll → download every result; charged exactly; nobody else sees it."
    alice, bob = user(server), user(server)
    rule_id = alice.post("/rules", json={"name": "walls", "domain": "interior", "protect": ["person"],
                                         "edits": [{"concept": "wall", "action": "recolor", "color": "#EDE6DA"}]}).json()["id"]
    photos = [png_bytes(64, 48), png_bytes(40, 56, color=(20, 160, 90), format="JPEG")]
    body = {"domain": "interior", "rule_id": rule_id,
            "items": [{"filename": "living room.png", "content_type": "image/png", "size": len(photos[0])},
                      {"filename": "hall.jpg", "content_type": "image/jpeg", "size": len(photos[1])}]}
    created = alice.post("/jobs", json=body)
    assert created.status_code == 201, created.text
    job = created.json()
    assert (job["status"], [u["item"] for u in job["uploads"]]) == ("created", [0, 1])
    for upload in job["uploads"]:
        assert upload["method"] == "PUT" and upload["url"].startswith(server.url + "/") and upload["expires_at"]
        assert {k.lower() for k in upload["headers"]} == {"content-type", "content-length"}

    assert error_of(alice.post(f"/jobs/{job['id']}/execute")) == (409, "invalid_state")  # not uploaded yet
    missing = alice.post(f"/jobs/{job['id']}/confirm-upload")
    assert error_of(missing) == (409, "upload_incomplete") and missing.json()["error"]["items"] == [0, 1]
    alice.upload(job, photos)
    confirmed = alice.post(f"/jobs/{job['id']}/confirm-upload")
    assert (confirmed.status_code, confirmed.json()) == (200, {"id": job["id"], "status": "uploaded"})

    for attempt in (bob.get(f"/jobs/{job['id']}"), bob.post(f"/jobs/{job['id']}/execute"),
                    bob.post(f"/jobs/{job['id']}/cancel"), bob.post(f"/jobs/{job['id']}/confirm-upload")):
        assert error_of(attempt) == (404, "not_found")

    executed = alice.post(f"/jobs/{job['id']}/execute")
    assert (executed.status_code, executed.json()) == (202, {"id": job["id"], "status": "queued", "credits_reserved": 2})
    assert alice.me()["credits"] == 28

    final = alice.wait(job["id"])
    assert final["status"] == "done", final
    assert final["progress"] == {"total": 2, "done": 2, "failed": 0, "canceled": 0, "unchanged": 0}
    assert (final["credits_reserved"], final["credits_charged"], final["credits_refunded"]) == (2, 2, 0)
    assert (final["domain"], final["rule"]["edits"][0]["concept"]) == ("interior", "wall")
    for item, photo in zip(final["items"], photos):
        assert (item["status"], item["error"]) == ("done", None)
        assert item["result_url"].startswith(server.url + "/")
        result = httpx.get(item["result_url"])
        assert (result.status_code, result.headers["content-type"]) == (200, "image/png")
        edited = Image.open(io.BytesIO(result.content))
        original = Image.open(io.BytesIO(photo)).convert("RGB")
        assert (edited.format, edited.size) == ("PNG", original.size)
    me = alice.me()
    assert (me["credits"], me["active_jobs"]) == (28, 0)
    assert [j["id"] for j in alice.get("/jobs").json()][:1] == [job["id"]]

    assert error_of(bob.get(f"/jobs/{job['id']}")) == (404, "not_found")
    assert bob.get("/jobs").json() == [] and bob.me()["credits"] == 30
    assert error_of(httpx.get(final["items"][0]["result_url"].replace("signature=", "signature=1"))) == (403, "forbidden")


def test_the_rule_changes_the_photo(server):
    "With thresholds at 0 the tiny model finds walls; painting them red makes the photo redder where it changed."
    alice = user(server)
    photo = png_bytes(64, 48, color=(120, 120, 120))
    job_id = alice.uploaded_job([photo], rule={"edits": [{"concept": "wall", "action": "recolor", "color": "#FF0000"}], "protect": []})
    assert alice.post(f"/jobs/{job_id}/execute").status_code == 202
    final = alice.wait(job_id)
    assert final["status"] == "done", final
    edited = np.asarray(Image.open(io.BytesIO(httpx.get(final["items"][0]["result_url"]).content)).convert("RGB")).astype(int)
    original = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB")).astype(int)
    changed = (edited != original).any(axis=-1)
    assert changed.any(), "the edit changed nothing"
    redness = lambda pixels: (pixels[..., 0] - pixels[..., 1]).mean()
    assert redness(edited[changed]) > redness(original[changed]) + 20


def test_cancel_refunds(server):
    carol = user(server)
    photos = [png_bytes(64, 48, color=(i * 20, 50, 90)) for i in range(10)]
    not_executed = carol.uploaded_job(photos[:2])
    canceled = carol.post(f"/jobs/{not_executed}/cancel")
    assert (canceled.status_code, canceled.json()) == (200, {"id": not_executed, "status": "canceled", "credits_refunded": 0})

    job_id = carol.uploaded_job(photos)
    assert carol.post(f"/jobs/{job_id}/execute").json()["credits_reserved"] == 10
    answer = carol.post(f"/jobs/{job_id}/cancel")
    assert answer.status_code == 200, answer.text
    status = carol.get(f"/jobs/{job_id}").json()
    assert status["status"] == "canceled"
    assert answer.json()["credits_refunded"] == status["credits_refunded"] == 10 - status["credits_charged"]
    assert status["credits_charged"] == sum(item["status"] == "done" for item in status["items"])
    assert status["credits_refunded"] >= 8, "the cancel came too late to test a refund"
    me = carol.me()
    assert (me["credits"], me["active_jobs"]) == (30 - status["credits_charged"], 0)
    assert error_of(carol.post(f"/jobs/{job_id}/cancel")) == (409, "invalid_state")
    assert error_of(carol.post(f"/jobs/{job_id}/execute")) == (409, "invalid_state")


def test_upload_urls_stop_with_the_job(server):
    "An upload URL takes its photo only while the job is created: after confirm or cancel it is a 409, and a job "
    "canceled before confirming exports no original (its bytes were never checked)."
    dave = user(server)
    photo = png_bytes(64, 48)
    pending = dave.create_job([photo, photo])
    dave.upload({"uploads": pending["uploads"][:1]}, [b"\x89PNG not really a photo" + bytes(len(photo) - 23)])
    assert dave.post(f"/jobs/{pending['id']}/cancel").status_code == 200
    late = pending["uploads"][1]
    refused = httpx.put(late["url"], content=photo, headers=late["headers"], timeout=60)
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "invalid_state"), refused.text
    assert "no longer take photos" in refused.json()["error"]["message"]
    status = dave.get(f"/jobs/{pending['id']}").json()
    assert ([it["status"] for it in status["items"]], status["progress"]["canceled"]) == (["canceled", "canceled"], 2)
    export = dave.get(f"/jobs/{pending['id']}/export")
    assert export.status_code == 200, export.text
    import zipfile
    assert [n for n in zipfile.ZipFile(io.BytesIO(export.content)).namelist() if n.startswith("originals/")] == []

    confirmed = dave.create_job([photo])
    dave.upload(confirmed, [photo])
    assert dave.post(f"/jobs/{confirmed['id']}/confirm-upload").status_code == 200
    again = confirmed["uploads"][0]
    assert httpx.put(again["url"], content=photo, headers=again["headers"], timeout=60).status_code == 409


def room_bytes(size=(160, 120), wall=(200, 190, 175)) -> bytes:
    "A synthetic room (wall, floor, sofa, window) as PNG bytes."
    import tempfile
    from test_ui_client import room
    with tempfile.TemporaryDirectory() as folder: return room(Path(folder) / "room.png", size, wall).read_bytes()


def test_concurrency_limit_and_insufficient_credits(server):
    "Two executes at once: one 202, one 429. Three jobs of 10 use the free plan's 30 credits; the 4th is a 402."
    dave = user(server)
    photos = [room_bytes(wall=(200 - i * 8, 190, 175)) for i in range(10)]  # rooms whose walls the model finds: every photo is charged
    jobs = [dave.uploaded_job(photos) for _ in range(4)]

    barrier, answers = threading.Barrier(2, timeout=60), {}
    def execute(job_id):
        with httpx.Client(base_url=server.url, headers=dave.auth, timeout=60) as http:
            barrier.wait()
            answers[job_id] = http.post(f"/jobs/{job_id}/execute")
    threads = [threading.Thread(target=execute, args=(job_id,)) for job_id in jobs[:2]]
    for thread in threads: thread.start()
    for thread in threads: thread.join()
    statuses = sorted(answer.status_code for answer in answers.values())
    assert statuses == [202, 429], {k: v.text for k, v in answers.items()}
    refused = next(answer for answer in answers.values() if answer.status_code == 429)
    assert error_of(refused) == (429, "concurrency_limit") and int(refused.headers["retry-after"]) > 0
    winner = next(job_id for job_id, answer in answers.items() if answer.status_code == 202)
    loser = next(job_id for job_id in jobs[:2] if job_id != winner)

    assert dave.wait(winner)["status"] == "done"
    for job_id in (loser, jobs[2]):
        assert dave.post(f"/jobs/{job_id}/execute").status_code == 202
        final = dave.wait(job_id)
        assert (final["status"], final["credits_charged"], final["credits_refunded"]) == ("done", 10, 0), final
    assert dave.me()["credits"] == 0
    fourth = dave.post(f"/jobs/{jobs[3]}/execute")
    assert error_of(fourth) == (402, "insufficient_credits"), fourth.text
    assert dave.get(f"/jobs/{jobs[3]}").json()["status"] == "uploaded"  # nothing reserved, nothing changed
    assert dave.me()["credits"] == 0


def test_quote_then_export_with_coco_masks(server):
    "A quote is what execute reserves; the finished job's export ZIP has results, originals, one PNG per instance and a COCO "
    "instances.json that pycocotools decodes to exactly those PNGs; nobody else can export it, nor can anyone before it ends."
    import zipfile
    from pycocotools import mask as coco_mask
    alice, bob = user(server), user(server)
    photos = [png_bytes(64, 48, color=(120, 120, 120)), png_bytes(40, 56, color=(20, 160, 90), format="JPEG")]
    rule = {"edits": [{"concept": "wall", "action": "recolor", "color": "#A8B197"}], "protect": ["person"]}
    body = {"domain": "interior", "rule": rule, "thresholds": {"wall": 0.0, "person": 0.0},
            "items": [{"filename": name, "content_type": kind, "size": len(photo)}
                      for name, kind, photo in zip(("living room.png", "hall.jpg"), ("image/png", "image/jpeg"), photos)]}
    quote = alice.post("/jobs/quote", json=body)
    assert quote.status_code == 200, quote.text
    assert {k: quote.json()[k] for k in ("images", "credits", "balance", "enough")} == {"images": 2, "credits": 2, "balance": 30, "enough": True}
    assert error_of(alice.post("/jobs/quote", json={**body, "items": []}))[1] == "invalid_request"
    assert alice.me()["credits"] == 30 and alice.get("/jobs").json() == []  # a quote creates and reserves nothing
    job = alice.post("/jobs", json=body).json()
    alice.upload(job, photos)
    assert alice.post(f"/jobs/{job['id']}/confirm-upload").status_code == 200
    assert error_of(alice.get(f"/jobs/{job['id']}/export")) == (409, "invalid_state")  # not finished
    executed = alice.post(f"/jobs/{job['id']}/execute").json()
    assert executed["credits_reserved"] == quote.json()["credits"]
    assert alice.wait(job["id"])["status"] == "done"
    assert error_of(bob.get(f"/jobs/{job['id']}/export")) == (404, "not_found")
    exported = alice.get(f"/jobs/{job['id']}/export")
    assert (exported.status_code, exported.headers["content-type"]) == (200, "application/zip")
    archive = zipfile.ZipFile(io.BytesIO(exported.content))
    names = set(archive.namelist())
    assert {"results/living-room.png", "results/hall.png", "originals/living-room.png", "originals/hall.jpg",
            "instances.json", "manifest.json"} <= names
    assert archive.read("originals/hall.jpg") == photos[1]
    coco = json.loads(archive.read("instances.json"))
    category = {c["id"]: c["name"] for c in coco["categories"]}
    assert coco["annotations"], "the tiny model at threshold 0 finds walls"
    assert {a["concept"] for a in coco["annotations"]} <= {"wall", "person"}
    for note in coco["annotations"]:
        image = coco["images"][note["image_id"] - 1]
        png = np.asarray(Image.open(io.BytesIO(archive.read(note["mask"]))))
        assert png.dtype == np.uint8 and set(np.unique(png)) <= {0, 255}
        decoded = coco_mask.decode({"size": note["segmentation"]["size"], "counts": note["segmentation"]["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), png == 255), note["mask"]
        assert decoded.shape == (image["height"], image["width"])
        assert note["area"] == int(decoded.sum()) and note["iscrowd"] == 0 and isinstance(note["protected"], bool)
        assert note["protected"] == (note["concept"] == "person") and category[note["category_id"]] == note["concept"]
        assert note["mask"] == f"masks/{Path(image['file_name']).stem}/{note['concept']}-{note['index']}.png"
        if note["area"]: assert list(coco_mask.toBbox(coco_mask.encode(np.asfortranarray(decoded)))) == note["bbox"]


def test_interior_disclosure_pack(server):
    "An interior job labels each altered photo (pixels in the label's box), lists each original right after its altered photo, "
    "and warns when a permanent feature changed — not when only a movable object did; a photo nothing changed is not labelled."
    import zipfile
    alice = user(server)

    def exported(rule, thresholds, **options):
        photos = [png_bytes(320, 240, color=(150, 140, 130)), png_bytes(320, 240, color=(90, 100, 110))]
        body = {"domain": "interior", "rule": rule, "thresholds": thresholds, **options,
                "items": [{"filename": f"room-{i}.png", "content_type": "image/png", "size": len(p)} for i, p in enumerate(photos)]}
        job = alice.post("/jobs", json=body).json()
        alice.upload(job, photos)
        assert alice.post(f"/jobs/{job['id']}/confirm-upload").status_code == 200
        assert alice.post(f"/jobs/{job['id']}/execute").status_code == 202
        status = alice.wait(job["id"])
        assert status["status"] == "done", status
        answer = alice.get(f"/jobs/{job['id']}/export")
        assert answer.status_code == 200, answer.text
        return status, zipfile.ZipFile(io.BytesIO(answer.content)), photos

    status, archive, photos = exported({"edits": [{"concept": "wall", "action": "recolor", "color": "#A8B197"}], "protect": []}, {"wall": 0.0})
    assert status["disclosure"]["label"] == "Digitally altered"  # on by default for interior
    told = json.loads(archive.read("disclosure.json"))
    assert [p["files"] for p in told["photos"]] == [["listing/01-altered.png", "listing/01-original.png"],
                                                    ["listing/02-altered.png", "listing/02-original.png"]]
    assert archive.read("listing/01-original.png") == photos[0]  # the original right after its altered photo
    for photo, original in zip(told["photos"], photos):
        assert photo["altered"] and "Wall" in photo["warning"]
        x, y, w, h = photo["label"]["box"]
        result = np.asarray(Image.open(io.BytesIO(archive.read(photo["files"][0]))).convert("RGB")).astype(int)
        inside = result[y:y + h, x:x + w]
        assert (inside.min(-1) > 230).sum() > 20 and (inside.max(-1) < 60).mean() > 0.3, "white text on a dark box"
        assert (result[y:y + h, x:x + w] != np.asarray(Image.open(io.BytesIO(original)).convert("RGB"))[y:y + h, x:x + w]).any()
    assert "**Warning:**" in archive.read("disclosure.md").decode()

    _, archive, _ = exported({"edits": [{"concept": "sofa", "action": "recolor", "color": "#A8B197"}], "protect": []}, {"sofa": 0.0})
    told = json.loads(archive.read("disclosure.json"))
    assert all(p["altered"] and p["warning"] is None for p in told["photos"]) and not told["permanent_features_altered"]

    _, archive, photos = exported({"edits": [{"concept": "wall", "action": "recolor", "color": "#A8B197"}], "protect": []}, {"wall": 1.0})
    told = json.loads(archive.read("disclosure.json"))  # nothing found, nothing changed: nothing labelled
    assert [(p["altered"], p["label"], p["files"]) for p in told["photos"]] == [(False, None, ["listing/01.png"]), (False, None, ["listing/02.png"])]
    assert archive.read("listing/01.png") == photos[0]

    status, archive, _ = exported({"edits": [{"concept": "wall", "action": "recolor", "color": "#A8B197"}], "protect": []}, {"wall": 0.0},
                                  disclosure=False)
    assert status["disclosure"] is None and "disclosure.json" not in archive.namelist()
    assert not any(name.startswith("listing/") for name in archive.namelist())


def test_seller_job_fitted_to_the_amazon_profile(server):
    "fit=amazon cuts each result around the product and scales it to at least 1000 px; its masks are cut and scaled alike "
    "(instances.json decodes to the result's size), and the product then spans at least 85 % of the frame."
    import zipfile
    alice = user(server)
    photo = png_bytes(200, 150, color=(230, 230, 230))
    body = {"domain": "seller", "fit": "amazon", "thresholds": {"product": 0.0, "background": 0.0},
            "rule": {"edits": [{"concept": "background", "action": "fill", "color": "#FFFFFF"}], "protect": ["product"]},
            "items": [{"filename": "mug.png", "content_type": "image/png", "size": len(photo)}]}
    assert error_of(alice.post("/jobs", json={**body, "fit": "walmart"}))[1] == "invalid_request"
    job = alice.post("/jobs", json=body).json()
    alice.upload(job, [photo])
    assert alice.post(f"/jobs/{job['id']}/confirm-upload").status_code == 200
    assert alice.post(f"/jobs/{job['id']}/execute").status_code == 202
    status = alice.wait(job["id"])
    assert status["status"] == "done" and status["fit"] == "amazon", status
    assert [c["check"] for c in status["items"][0]["checks"]] == ["amazon", "ebay", "shopify", "etsy"]
    archive = zipfile.ZipFile(io.BytesIO(alice.get(f"/jobs/{job['id']}/export").content))
    result = Image.open(io.BytesIO(archive.read("results/mug.png")))
    assert max(result.size) >= 1000
    coco = json.loads(archive.read("instances.json"))
    assert (coco["images"][0]["width"], coco["images"][0]["height"]) == result.size
    for note in coco["annotations"]:
        assert note["segmentation"]["size"] == [result.height, result.width]
    amazon = next(c for c in status["items"][0]["checks"] if c["check"] == "amazon")
    assert any(reason.startswith("product spans") and "needs" not in reason for reason in amazon["reasons"]), amazon
