"""The palette app in a real browser (pytest + Playwright driving Debian's chromium, installed here if missing) against a
server subprocess (`python app.py`, tiny SAM 3, every preset threshold at 0 so the random model finds instances):
signed in automatically → Interior → two photos → "Wall" → instance cards → protect one → a recolour edit → preview
slider → save (slots update) → apply → 100 % → two results → export ZIP whose manifest lists both → reload and server
restart keep the user and credits → Korean labels. Every request must go to 127.0.0.1. Each step leaves a screenshot
in artifacts/browser/, the README's three as well; S3LIB_UPDATE_SCREENSHOTS=1 refreshes them in docs/."""
import io
import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from api_server import ServerProcess, free_port
from test_ui_client import room, zero_threshold_presets

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "browser"
DOCS = ROOT / "docs" if os.environ.get("S3LIB_UPDATE_SCREENSHOTS") == "1" else ARTIFACTS  # tests don't touch tracked files
CHROMIUM = "/usr/bin/chromium"
PACKAGES = ("chromium", "fonts-noto-cjk", "fonts-noto-color-emoji")  # the fonts: Korean labels and emoji in screenshots
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def installed(package: str) -> bool:
    answer = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return answer.returncode == 0 and "install ok installed" in answer.stdout


def ensure_chromium() -> str:
    "Debian's chromium (and fonts for the screenshots), installed with apt-get when missing and allowed."
    missing = [p for p in PACKAGES if shutil.which("dpkg-query") and not installed(p)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
        if subprocess.run(command, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True)
            subprocess.run(command, capture_output=True)
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing and could not be installed: run `apt-get install -y chromium` as root "
                    "(never `playwright install`)")
    return CHROMIUM


@pytest.fixture(scope="module")
def chromium() -> str:
    return ensure_chromium()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_sam3):
    root = tmp_path_factory.mktemp("browser")
    env = {"S3LIB_MODEL": str(tiny_sam3), "S3LIB_RUNNER": "inline", "GRADIO_HEARTBEAT_INTERVAL": "1",
           "S3LIB_PRESETS_DIR": str(zero_threshold_presets(root / "presets"))}
    photos = [room(root / "living-room.png", size=(640, 480)), room(root / "bedroom.png", size=(600, 450), wall=(180, 170, 160))]
    return {"data": root / "data", "env": env, "port": free_port(), "photos": photos}


def start(setup) -> ServerProcess:
    return ServerProcess(setup["data"], setup["env"], port=setup["port"]).start()


def test_the_palette_flow_in_a_browser(chromium, setup):
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=60_000)  # the first click loads the model

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    DOCS.mkdir(parents=True, exist_ok=True)
    server = start(setup)
    requests, step = [], iter(range(1, 100))

    def shot(page, name: str) -> None:
        page.screenshot(path=ARTIFACTS / f"{next(step):02d}-{name}.png", full_page=True)

    def field(elem_id: str): return page.locator(f"#{elem_id} textarea, #{elem_id} input").first

    def readme_shot(elem_id: str, name: str) -> None:
        "A README screenshot of one part of the page, once confirmations (toasts) are gone."
        expect(page.locator(".toast-body")).to_have_count(0, timeout=15_000)
        page.locator(f"#{elem_id}").screenshot(path=DOCS / name)

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.on("request", lambda request: requests.append(request.url))
            page.set_default_timeout(60_000)

            page.goto(server.url + "/", wait_until="domcontentloaded")
            header = page.locator("#header")
            expect(header).to_contain_text("Free plan · 30 credits · rules 0/2")  # signed in by itself
            shot(page, "signed-in")

            page.get_by_label("Product seller").check()
            expect(page.get_by_role("button", name="Product 🔒", exact=True)).to_be_visible()  # the seller palette
            expect(page.locator("#fit input")).to_have_value("No: keep each photo's framing")  # results may be fitted to a marketplace
            shot(page, "seller")
            page.get_by_label("Interior").check()
            expect(page.locator("#fit")).to_be_hidden()  # rooms have no marketplace
            expect(page.get_by_role("button", name="Wall", exact=True)).to_be_visible()
            expect(page.get_by_role("button", name="Person 🔒", exact=True)).to_be_visible()  # protected by default
            shot(page, "interior")

            page.locator("#photos input[type=file]").set_input_files([str(p) for p in setup["photos"]])
            expect(page.locator("#strip .thumbnail-item")).to_have_count(2)
            shot(page, "uploaded")

            page.get_by_role("button", name="Wall", exact=True).click()
            cards = page.locator(".s3-card")
            expect(cards.nth(1)).to_be_visible()  # several walls: the random model finds many at threshold 0
            expect(page.locator("#threshold")).to_contain_text("Score threshold · Wall")
            shot(page, "wall-cards")

            cards.first.get_by_label("Protect").check()
            expect(page.locator("#canvas")).to_contain_text("Wall 1 · ")
            expect(page.locator("#canvas")).to_contain_text("· protected")
            readme_shot("canvas-column", "cards.png")
            shot(page, "protected")

            expect(field("edit-concept")).to_have_value("Wall")  # the composer follows the clicked concept
            page.locator("#swatches .thumbnail-item").nth(4).click()  # Sage
            expect(page.locator("#edit-color button")).to_have_attribute("style", re.compile(r"rgb\(168, 177, 151\)"))  # the picker shows it …
            page.locator("#add-edit").click()  # … then the edit takes it
            expect(page.locator("#edits")).to_contain_text("1. Wall → Recolour Sage #A8B197")
            readme_shot("composer-column", "composer.png")
            shot(page, "edit-added")

            page.locator("#preview-button").click()
            expect(page.locator("#preview img")).to_have_count(2)  # before and after, with the slider between them
            shot(page, "preview")

            field("rule-name").fill("Sage walls")
            page.locator("#save-rule").click()
            expect(header).to_contain_text("rules 1/2")  # the slots update
            expect(field("saved-rules")).to_have_value("Sage walls")
            shot(page, "rule-saved")

            page.locator("#apply").click()
            expect(page.locator("#job .s3-percent")).to_have_text("100 %", timeout=180_000)
            expect(page.locator("#job [data-status=done]")).to_be_attached()
            expect(header).to_contain_text("28 credits")
            shot(page, "job-done")

            results = page.locator("#results .thumbnail-item")
            expect(results).to_have_count(2)
            results.nth(1).click()
            expect(page.locator("#result-slider img").first).to_be_visible()
            readme_shot("job-column", "gallery.png")
            shot(page, "results")

            page.locator("#export-button").click()
            link = page.locator("#export a").first
            expect(link).to_be_visible()
            with page.expect_download() as download:
                link.click()
            archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
            manifest = json.loads(archive.read("manifest.json"))
            assert [(i["input"], i["status"]) for i in manifest["items"]] == [("living-room.png", "done"), ("bedroom.png", "done")]
            assert {"results/living-room.png", "results/bedroom.png", "originals/living-room.png", "masks/living-room/wall-0.png",
                    "instances.json"} <= set(archive.namelist())
            assert manifest["rule"]["name"] == "Sage walls" and manifest["thresholds"]["wall"] == 0.0
            (ARTIFACTS / "export.zip").write_bytes(Path(download.value.path()).read_bytes())
            shot(page, "exported")

            signed_in_as = header.inner_text()
            page.reload(wait_until="domcontentloaded")
            expect(header).to_have_text(signed_in_as)  # same user: 28 credits, rules 1/2
            shot(page, "reloaded")

            page.goto("about:blank")  # close the page's connections (its heartbeat would hold up a clean stop)
            assert server.stop(), server.log_tail()
            server = start(setup)  # same data dir, port and secrets
            page.goto(server.url + "/", wait_until="domcontentloaded")
            expect(header).to_have_text(signed_in_as)
            shot(page, "restarted")

            page.get_by_label("한국어").check()
            expect(page.get_by_role("button", name="벽", exact=True)).to_be_visible()
            expect(header).to_contain_text("크레딧 28")
            shot(page, "korean")
            browser.close()
    finally:
        server.stop()
    outside = sorted({url for url in requests if not url.startswith((server.url + "/", "data:", "blob:", "about:"))})
    assert outside == [], f"requests left the machine: {outside}"
    log = server.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log, server.log_tail()


def test_without_the_model_the_page_says_why(chromium, tmp_path):
    "SAM 3 cannot be loaded: the page still opens, signs in, and a banner says why and how to fix it."
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(tmp_path / "data", {"S3LIB_MODEL": str(tmp_path / "no-such-model"), "GRADIO_HEARTBEAT_INTERVAL": "1"})
    server.start()
    requests = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(server.url + "/", wait_until="domcontentloaded")
            expect(page.locator("#header")).to_contain_text("30 credits", timeout=60_000)
            banner = page.locator("#model-banner")
            expect(banner).to_contain_text("SAM 3 is not available", timeout=60_000)
            expect(banner).to_contain_text("no-such-model")
            expect(page.get_by_role("button", name="Wall", exact=True)).to_be_visible()  # the rest of the page works
            page.screenshot(path=ARTIFACTS / "model-unavailable.png", full_page=True)
            page.goto("about:blank")
            browser.close()
    finally:
        assert server.stop(), server.log_tail()
    assert sorted({url for url in requests if not url.startswith((server.url + "/", "data:", "blob:", "about:"))}) == []
