"""A brand-new edit action, registered at runtime and offered by a preset file, is validated by rules, applied by
apply_rule/apply_edit and offered by the UI composer, with no other code change."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from s3lib.core import InvalidRequest, RuleError, load_settings
from s3lib.edit import ACTIONS, Action, Param, apply_edit, register_action, unregister_action
from s3lib.presets import load_presets
from s3lib.rules import Rule, apply_rule, rule_schema
from s3lib.segment import Instance

ROOT = Path(__file__).resolve().parent.parent
SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)


def sepia_tone(image, mask, strength=0.5):
    "Tone the masked pixels sepia, `strength` of the way."
    pixels = image[mask].astype(np.float32)
    toned = np.clip(pixels @ SEPIA.T, 0, 255)
    result = image.copy()
    result[mask] = np.rint(pixels + strength * (toned - pixels)).astype(np.uint8)
    return result


@pytest.fixture
def sepia():
    "The sepia action, registered for one test only."
    action = register_action(Action("sepia", sepia_tone, {"strength": Param("number", False, 0.5, 0.0, 1.0)}))
    yield action
    unregister_action("sepia")
    assert "sepia" not in ACTIONS


@pytest.fixture
def presets(tmp_path, sepia):
    "The shipped presets, with sepia allowed on the interior's walls (what a person adding the action writes)."
    folder = tmp_path / "presets"
    shutil.copytree(ROOT / "presets", folder)
    data = json.loads((folder / "interior.json").read_text(encoding="utf-8"))
    next(c for c in data["concepts"] if c["id"] == "wall")["actions"].append("sepia")
    (folder / "interior.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return load_presets(folder)


def rule(presets, **edit):
    return Rule.from_dict({"name": "Old photo", "domain": "interior", "edits": [{"concept": "wall", "action": "sepia", **edit}]},
                          presets)


def test_rules_validate_it(presets):
    assert rule(presets).edits[0].params == {"strength": 0.5}  # the default filled in
    assert rule(presets, strength=1).edits[0].params == {"strength": 1.0}
    with pytest.raises(RuleError) as error:
        rule(presets, strength=2)
    assert error.value.details["field"] == "edits[0].strength" and "from 0.0 to 1.0" in str(error.value)
    with pytest.raises(RuleError, match="not allowed on 'floor'"):
        Rule.from_dict({"name": "x", "domain": "interior", "edits": [{"concept": "floor", "action": "sepia"}]}, presets)
    branches = {b["properties"]["action"]["const"]: b for b in rule_schema()["properties"]["edits"]["items"]["oneOf"]}
    assert branches["sepia"]["properties"]["strength"] == {"type": "number", "minimum": 0.0, "maximum": 1.0, "default": 0.5}


def test_apply_edit_and_apply_rule_run_it(presets):
    image = np.full((20, 30, 3), (40, 120, 200), np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[:10] = True
    toned = apply_edit(image, mask, "sepia", {})
    assert (toned[mask] != image[mask]).any() and (toned[~mask] == image[~mask]).all()
    with pytest.raises(InvalidRequest) as error:
        apply_edit(image, mask, "sepia", {"strength": 0.5, "tone": "warm"})
    assert error.value.details["field"] == "tone"
    wall = Instance("wall", 0, 0.9, (0.0, 0.0, 30.0, 10.0), mask)
    result = apply_rule(Image.fromarray(image), [wall], rule(presets))
    assert (np.asarray(result.image) == toned).all()
    assert result.report[0]["pixels_changed"] == mask.sum()


def test_the_composer_offers_it(presets, tmp_path):
    from s3lib.ledger import Ledger
    from s3lib.service import Service
    from s3lib.storage import LocalStore
    from s3lib.ui.handlers import PaletteApp
    from s3lib.ui.page import build_demo, parameter_control
    from s3lib.ui.views import action_view, parameter_view
    from s3lib.ui.workspace import Workspace, composer_params, describe_edit
    from s3lib.runners.inline import InlineRunner

    interior = presets["interior"]
    ws = Workspace.start(interior)
    app = PaletteApp(SimpleNamespace(presets=presets), None)
    assert ("Sepia", "sepia") in action_view(interior, "wall", "ko")["action"]["choices"]  # the readable name stands in
    assert ("Sepia", "sepia") not in action_view(interior, "floor", "en")["action"]["choices"]
    slider = parameter_control("strength", composer_params()["strength"], interior)
    assert (slider.minimum, slider.maximum, slider.value, slider.label) == (0.0, 1.0, 0.5, "Strength")
    assert {name for name, update in parameter_view("sepia").items() if update["visible"]} == {"param_strength"}
    app.add_edit("wall", "sepia", {"color": "#A8B197", "strength": 0.8}, ws, "en", len(interior.concepts))
    assert ws.edits == [{"concept": "wall", "action": "sepia", "strength": 0.8}]
    assert describe_edit(ws.edits[0], interior) == "Wall → Sepia strength 0.8"

    settings = load_settings(ROOT / "settings.ini", env={}).replace(
        server={"data_dir": str(tmp_path / "data")},
        auth={"jwt_secret": "jwt-secret-for-the-registry-test-0123456789", "callback_secret": "callback-secret-for-the-registry-test-9876"})
    service = Service(settings, Ledger(), LocalStore(tmp_path / "objects", "http://testserver", "url-signing-secret-for-the-registry-test"),
                      presets, segmenter_factory=lambda: None, runner=InlineRunner()).start(maintenance_seconds=None)
    try:
        demo = build_demo(service)
        [strength] = [b for b in demo.blocks.values() if b.elem_id == "edit-strength"]
        assert (type(strength).__name__, strength.minimum, strength.maximum, strength.value) == ("Slider", 0.0, 1.0, 0.5)
    finally:
        service.close()
