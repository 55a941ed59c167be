"""Presets and rules from outside the notebook: a fresh process, configured only by the environment, as a
deployment is. Adding a domain is dropping a JSON file into the presets folder; importing rules stays cheap."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, **env})


def test_dropped_preset_file_is_loaded_and_rules_validate_against_it(tmp_path):
    presets = tmp_path / "my-presets"
    shutil.copytree(ROOT / "presets", presets)
    garden = {"id": "garden", "name": {"en": "Garden", "ko": "정원"},
              "concepts": [{"id": "lawn", "labels": {"en": "Lawn", "ko": "잔디"}, "prompt": "lawn", "threshold": 0.4,
                            "actions": ["recolor", "adjust"]},
                           {"id": "gnome", "labels": {"en": "Gnome", "ko": "난쟁이 인형"}, "prompt": "garden gnome",
                            "threshold": 0.5, "actions": ["remove"]}],
              "protect_defaults": [], "swatches": [{"name": "Spring green", "color": "#7BB661"}], "materials": ["slate"]}
    (presets / "garden.json").write_text(json.dumps(garden, ensure_ascii=False), encoding="utf-8")
    code = """
import json
from s3lib.presets import load_presets
from s3lib.rules import Rule
from s3lib.core import RuleError, load_settings
presets = load_presets(load_settings())  # the entry point resolves settings; library calls take what it resolved
print(json.dumps(sorted(presets)))
rule = Rule.from_dict({"name": "Greener", "domain": "garden", "edits": [{"concept": "lawn", "action": "recolor", "color": "#7BB661"}]}, presets)
print(rule.to_json())
try: Rule.from_dict({"name": "x", "domain": "garden", "edits": [{"concept": "gnome", "action": "blur"}]}, presets)
except RuleError as e: print(json.dumps(e.to_dict()))
"""
    done = run_python(code, ROOT, S3LIB_SETTINGS=str(ROOT / "settings.ini"), S3LIB_PRESETS_DIR=str(presets))
    assert done.returncode == 0, done.stderr
    ids, rule, error = [json.loads(line) for line in done.stdout.splitlines()]
    assert ids == ["garden", "interior", "seller"]
    assert rule["edits"] == [{"concept": "lawn", "action": "recolor", "color": "#7BB661"}]
    assert error == {"code": "invalid_rule", "field": "edits[0].action",
                     "message": "edits[0].action: 'blur' is not allowed on 'gnome' in preset 'garden'; allowed: remove"}


def test_a_broken_dropped_preset_names_file_and_field(tmp_path):
    presets = tmp_path / "presets"
    shutil.copytree(ROOT / "presets", presets)
    data = json.loads((presets / "seller.json").read_text(encoding="utf-8"))
    data["concepts"][2]["actions"].append("sharpen")
    (presets / "seller.json").write_text(json.dumps(data), encoding="utf-8")
    done = run_python("from s3lib.presets import load_presets; from s3lib.core import load_settings; load_presets(load_settings())", ROOT,
                      S3LIB_SETTINGS=str(ROOT / "settings.ini"), S3LIB_PRESETS_DIR=str(presets))
    assert done.returncode != 0
    assert f"{presets / 'seller.json'}: concepts[2].actions[" in done.stderr
    assert "'sharpen' is not an action; use one of recolor, material, fill, remove, blur, adjust" in done.stderr


def test_importing_rules_does_not_load_torch_or_gradio(tmp_path):
    done = run_python("import sys, s3lib.rules; print(sorted(m for m in ('torch', 'transformers', 'gradio') if m in sys.modules))",
                      tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
