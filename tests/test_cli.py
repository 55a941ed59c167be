"""The `s3lib` command end to end, as a user runs it: a real subprocess on a folder of photos."""
import json
import os
import subprocess
import sys

from PIL import Image

RULE = {"name": "Sage walls", "domain": "interior", "protect": ["person"],
        "edits": [{"concept": "wall", "action": "recolor", "color": "#9CAF88"},
                  {"concept": "floor", "action": "material", "name": "oak"}]}


def s3lib(*args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "s3lib", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_edit_folder_end_to_end(tmp_path, tiny_sam3):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, colour in enumerate([(200, 190, 170), (120, 130, 140)]):
        Image.new("RGB", (120 + 10 * i, 90), colour).save(photos / f"room{i}.jpg")
    Image.new("RGBA", (50, 40), (0, 0, 0, 0)).save(photos / "transparent.png")
    (tmp_path / "rule.json").write_text(json.dumps(RULE))
    out = tmp_path / "out"
    done = s3lib("edit", str(photos), "--rule", str(tmp_path / "rule.json"), "-o", str(out), "--model", str(tiny_sam3),
                 "--threshold", "0", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "3 edited, 0 failed" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["input"] for i in manifest["items"]] == ["room0.jpg", "room1.jpg", "transparent.png"]
    assert manifest["rule"]["edits"][1]["name"] == "oak"
    assert manifest["model"]["id"] == str(tiny_sam3)
    assert set(manifest["versions"]) >= {"s3lib", "torch", "transformers"}
    for item in manifest["items"]:
        with Image.open(out / item["output"]) as edited, Image.open(photos / item["input"]) as original:
            assert edited.size == original.size
        assert (out / item["masks"]["wall"]).exists()

    # a bad file among good ones: the good ones are written, the bad one is one line on stderr, exit 1
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    partial = s3lib("edit", str(photos), "--rule", str(tmp_path / "rule.json"), "-o", str(tmp_path / "out2"),
                    "--model", str(tiny_sam3), "--threshold", "0", "--quiet")
    assert partial.returncode == 1
    assert "broken.jpg" in partial.stderr and "3 edited, 1 failed" in partial.stdout

    # the manifest redoes the set
    redo = s3lib("edit", str(photos / "room0.jpg"), "--rule", str(out / "manifest.json"), "-o", str(tmp_path / "redo"),
                 "--model", str(tiny_sam3), "--quiet")
    assert redo.returncode == 0, redo.stderr
    assert (tmp_path / "redo" / "room0.png").read_bytes() == (out / "room0.png").read_bytes()


def test_errors_are_one_line(tmp_path, tiny_sam3):
    (tmp_path / "rule.json").write_text(json.dumps({**RULE, "edits": [{"concept": "wall", "action": "recolor", "color": "#zz"}]}))
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    bad_rule = s3lib("edit", str(tmp_path / "a.png"), "--rule", str(tmp_path / "rule.json"), "-o", str(tmp_path / "o"),
                     "--model", str(tiny_sam3))
    assert bad_rule.returncode == 2
    assert bad_rule.stderr.strip().count("\n") == 0 and "edits[0].color" in bad_rule.stderr, bad_rule.stderr
    (tmp_path / "good.json").write_text(json.dumps(RULE))
    no_photos = s3lib("edit", str(tmp_path / "missing"), "--rule", str(tmp_path / "good.json"), "-o", str(tmp_path / "o"),
                      "--model", str(tiny_sam3))
    assert no_photos.returncode == 2 and no_photos.stderr.strip().count("\n") == 0, no_photos.stderr  # told before the model loads
    no_model = s3lib("segment", str(tmp_path / "a.png"), "--preset", "interior", "--model", str(tmp_path / "nothing"))
    assert no_model.returncode == 2 and "--model" in no_model.stderr and "Traceback" not in no_model.stderr
    not_a_checkpoint = s3lib("segment", str(tmp_path / "a.png"), "--preset", "interior", "--model", str(tmp_path))
    assert not_a_checkpoint.returncode == 2 and "has no config.json" in not_a_checkpoint.stderr, not_a_checkpoint.stderr
    assert "--model" in not_a_checkpoint.stderr  # the fix names the flag that was used, not only the variable
    bad_setting = subprocess.run([sys.executable, "-m", "s3lib", "doctor"], capture_output=True, text=True,
                                 env={**os.environ, "S3LIB_RUNNER": "celery"}, timeout=120)
    assert bad_setting.returncode == 2 and "[runner] kind" in bad_setting.stderr


def test_segment_prints_instances_and_writes_masks(tmp_path, tiny_sam3):
    Image.new("RGB", (64, 48), (180, 170, 160)).save(tmp_path / "room.png")
    done = s3lib("segment", str(tmp_path / "room.png"), "--preset", "interior", "--concepts", "wall",
                 "--threshold", "0", "--model", str(tiny_sam3), "--masks", str(tmp_path / "masks"))
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["size"] == [64, 48] and found["instances"]
    first = found["instances"][0]
    with Image.open(tmp_path / "masks" / f"wall-{first['index']}.png") as mask:
        assert mask.size == (64, 48) and mask.mode == "L"
