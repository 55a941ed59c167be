"""The palette app keeps a person's work, in a real browser (Playwright + Debian chromium) against `python app.py` with the
tiny SAM 3 and thresholds at 0: a reload mid-job reattaches and the job finishes visibly; the jobs list survives a
server restart; removing a photo removes it from what is processed and charged; a photo on which no edit applies is
"unchanged" and not charged; a refusal is a toast that leaves no component marked; a typed threshold applies on Enter;
the primary action stays inside a 1440×900 window (empty page and 12 cards); a 390 px phone has no horizontal scroll;
axe-core finds no critical or serious violation (on the empty page, and with cards, results and jobs shown); the whole
flow works by keyboard alone, in an order that follows the flow; switching domain keeps each domain's draft rule and job,
and never shows one domain's results as another's."""
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from api_server import ServerProcess, free_port
from test_browser import ARTIFACTS, DOCS, FLAGS, chromium  # noqa: F401 (chromium: the fixture, shared)
from test_ui_client import room, zero_threshold_presets

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / ".cache" / "axe-core" / "axe.min.js"  # fetched by `make browser-deps` (npm pack axe-core)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_sam3):
    root = tmp_path_factory.mktemp("browser-work")
    env = {"S3LIB_MODEL": str(tiny_sam3), "S3LIB_RUNNER": "inline", "GRADIO_HEARTBEAT_INTERVAL": "1",
           "S3LIB_LIMITS_SIGNUPS_PER_MINUTE": "1000", "S3LIB_PRESETS_DIR": str(zero_threshold_presets(root / "presets"))}
    photos = [room(root / f"room-{i}.png", size=(1600, 1200), wall=(200 - 10 * i, 190, 175)) for i in range(6)]
    return {"data": root / "data", "env": env, "port": free_port(), "photos": photos}


@pytest.fixture(scope="module")
def server(setup):
    process = ServerProcess(setup["data"], setup["env"], port=setup["port"]).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=90_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # screenshots and axe.json, also when this file runs alone
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
        yield launched
        launched.close()


def open_page(browser, server, width=1440, height=900):
    "A fresh visitor (own storage: a new anonymous user) at this window size, signed in."
    from playwright.sync_api import expect
    page = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True).new_page()
    page.set_default_timeout(90_000)
    page.goto(server.url + "/", wait_until="domcontentloaded")
    expect(page.locator("#header")).to_contain_text("credits")
    return page


def close(page):
    page.goto("about:blank")  # its heartbeat would hold up a clean stop
    page.context.close()


def upload(page, paths):
    "Put photos in the Photos box and wait until they are the set (the strip shows them, the canvas has the first)."
    from playwright.sync_api import expect
    page.locator("#photos input[type=file]").set_input_files([str(p) for p in paths])
    expect(page.locator("#strip .thumbnail-item")).to_have_count(len(paths))
    expect(page.locator("#canvas img").first).to_be_visible()


def compose_wall_edit(page):
    "Find the walls on the canvas, pick a swatch and add 'Wall → Recolour'."
    from playwright.sync_api import expect
    page.get_by_role("button", name="Wall", exact=True).click()
    expect(page.locator(".s3-card").first).to_be_visible()
    page.locator("#swatches .thumbnail-item").nth(4).click()
    page.locator("#add-edit").click()
    expect(page.locator("#edits")).to_contain_text("Wall → Recolour")


FLOW = ["domain", "samples-button", "palette-buttons", "cards", "swatches", "add-edit", "rule-name", "apply", "export-button"]


def tab_to(page, predicate: str, limit: int = 400) -> list[str]:
    "Press Tab until `predicate` (JS, of the focused element `e`) holds; the regions of FLOW passed on the way, in order."
    passed = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        ids = page.evaluate("() => { const ids = []; for (let e = document.activeElement; e; e = e.parentElement) if (e.id) ids.push(e.id);"
                            " return ids; }")
        region = next((i for i in ids if i in FLOW), None)
        if region and (not passed or passed[-1] != region): passed.append(region)
        if page.evaluate(f"() => {{ const e = document.activeElement; return !!e && ({predicate}); }}"): return passed
    raise AssertionError(f"Tab never reached an element where {predicate}; passed {passed}")


def axe_violations(page) -> list[dict]:
    "axe-core's critical and serious violations on the page as it is now."
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `make browser-deps` (it fetches axe-core with npm)")
    page.wait_for_function("() => !document.querySelector('.pending, .generating')")  # no update under way (a dimmed component)
    page.wait_for_timeout(500)
    page.add_script_tag(path=str(AXE))
    return page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                         ".filter(v => ['critical', 'serious'].includes(v.impact))"
                         ".map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))")


def no_error_marks(page):
    "No component is covered by Gradio's 'Error' marker."
    from playwright.sync_api import expect
    expect(page.get_by_text("Error", exact=True).locator("visible=true")).to_have_count(0)


def test_a_reload_mid_job_reattaches_and_the_job_finishes_visibly(browser, server, setup):
    from playwright.sync_api import expect
    page = open_page(browser, server)
    upload(page, setup["photos"])
    expect(page.locator("#apply")).to_have_text("Apply to 6 photo(s) · 6 credit(s)")  # what will run and what it costs
    compose_wall_edit(page)
    page.locator("#apply").click()
    expect(page.locator("#job [data-status]")).to_be_attached()
    page.reload(wait_until="domcontentloaded")  # mid-job: the page starts from nothing …
    expect(page.locator("#job [data-status]")).to_be_attached()  # … and reattaches to the running job
    expect(page.locator("#job .s3-percent")).to_have_text("100 %", timeout=240_000)
    expect(page.locator("#results .thumbnail-item")).to_have_count(6)
    page.locator("#export-button").click()
    with page.expect_download() as download:
        page.locator("#export a").first.click()
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes())).read("manifest.json"))
    assert [i["status"] for i in manifest["items"]] == ["done"] * 6
    expect(page.locator("#my-jobs")).to_be_visible()
    expect(page.locator("#job-covers .thumbnail-item")).to_have_count(1)  # the job's picture in the list
    page.screenshot(path=ARTIFACTS / "work-reattached.png", full_page=True)
    DOCS.mkdir(parents=True, exist_ok=True)
    expect(page.locator(".toast-body")).to_have_count(0, timeout=15_000)
    page.locator("#job-column").screenshot(path=DOCS / "jobs.png")  # README: results, export and my jobs
    page.reload(wait_until="domcontentloaded")  # a finished job does not reattach: its picture opens it
    expect(page.locator("#job-covers .thumbnail-item")).to_have_count(1)
    expect(page.locator("#results")).to_be_hidden()
    page.locator("#job-covers .thumbnail-item").first.click()
    expect(page.locator("#results .thumbnail-item")).to_have_count(6)
    close(page)


def test_the_jobs_list_after_a_restart_opens_a_finished_job(browser, server, setup):
    "A visitor's jobs are listed after the server restarts, and opening one shows its results."
    from playwright.sync_api import expect
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(90_000)
    page.goto(server.url + "/", wait_until="domcontentloaded")
    expect(page.locator("#header")).to_contain_text("30 credits")
    upload(page, setup["photos"][:1])
    compose_wall_edit(page)
    page.locator("#apply").click()
    expect(page.locator("#job .s3-percent")).to_have_text("100 %", timeout=240_000)
    state = context.storage_state()
    page.goto("about:blank")
    context.close()
    assert server.stop(), server.log_tail()
    server.start()
    context = browser.new_context(viewport={"width": 1440, "height": 900}, storage_state=state)  # the same visitor comes back
    page = context.new_page()
    page.set_default_timeout(90_000)
    page.goto(server.url + "/", wait_until="domcontentloaded")
    page.locator("#my-jobs input").click()
    option = page.get_by_role("option").filter(has_text="done · 1/1 photos")
    expect(option.first).to_be_visible()
    option.first.click()
    expect(page.locator("#results .thumbnail-item")).to_have_count(1)
    expect(page.locator("#job [data-status=done]")).to_be_attached()
    close(page)


def test_a_removed_photo_is_not_processed_or_charged(browser, server, setup):
    from playwright.sync_api import expect
    page = open_page(browser, server)
    upload(page, setup["photos"][:3])
    page.get_by_label("Remove this file").nth(1).click()
    expect(page.locator("#strip .thumbnail-item")).to_have_count(2)
    expect(page.locator("#apply")).to_have_text("Apply to 2 photo(s) · 2 credit(s)")
    with page.expect_file_chooser() as chooser:  # Add photos joins the set
        page.locator("#add-photos").click()
    chooser.value.set_files([str(setup["photos"][5])])
    expect(page.locator("#strip .thumbnail-item")).to_have_count(3)
    expect(page.locator("#apply")).to_have_text("Apply to 3 photo(s) · 3 credit(s)")
    compose_wall_edit(page)
    page.locator("#apply").click()
    expect(page.locator("#job .s3-percent")).to_have_text("100 %", timeout=240_000)
    expect(page.locator("#job")).to_contain_text("3 of 3 photos done")
    expect(page.locator("#header")).to_contain_text("27 credits")
    expect(page.locator("#results .thumbnail-item")).to_have_count(3)
    close(page)


def test_a_rule_whose_concept_is_absent_leaves_the_photo_unchanged_and_free(browser, server, setup):
    "The floor threshold typed as 1 and Enter: no floor is found (at once), so 'Floor → Recolour' changes nothing and costs nothing."
    from playwright.sync_api import expect
    page = open_page(browser, server)
    upload(page, setup["photos"][:1])
    page.get_by_role("button", name="Floor", exact=True).click()
    expect(page.locator(".s3-card").first).to_be_visible()
    typed = page.locator("#threshold input[type=number]")
    typed.fill("1")
    typed.press("Enter")  # a typed value applies on Enter, no click or Tab needed
    expect(page.locator(".s3-card")).to_have_count(0)
    page.locator("#swatches .thumbnail-item").nth(4).click()  # the composer keeps its action (Recolour), now on the floor
    page.locator("#add-edit").click()
    expect(page.locator("#edits")).to_contain_text("Floor → Recolour")
    page.locator("#apply").click()
    expect(page.locator("#job .s3-percent")).to_have_text("100 %", timeout=240_000)
    expect(page.locator("#job")).to_contain_text("1 unchanged (not charged)")
    expect(page.locator("#header")).to_contain_text("30 credits")
    expect(page.locator("#results")).to_contain_text("unchanged, not charged")
    page.screenshot(path=ARTIFACTS / "work-unchanged.png", full_page=True)
    close(page)


def test_a_file_that_is_not_a_photo_is_left_out_by_name(browser, server, setup, tmp_path):
    "One bad file among good ones: the toast names it, the others are the set, and the Photos box holds exactly them."
    from playwright.sync_api import expect
    page = open_page(browser, server)
    fake = tmp_path / "notes.png"
    fake.write_text("these are meeting notes, not a photo")
    page.locator("#photos input[type=file]").set_input_files([str(setup["photos"][0]), str(fake), str(setup["photos"][1])])
    expect(page.locator(".toast-body").first).to_contain_text("notes.png")
    expect(page.locator("#strip .thumbnail-item")).to_have_count(2)
    expect(page.locator("#photos")).not_to_contain_text("notes.png")
    expect(page.locator("#apply")).to_have_text("Apply to 2 photo(s) · 2 credit(s)")
    close(page)


def test_a_reload_keeps_the_rule_being_composed(browser, server, setup):
    "Each domain's rule, its typed name too, survives a reload, in the domain it was composed in; the photos are uploaded again."
    from playwright.sync_api import expect
    page = open_page(browser, server)
    upload(page, setup["photos"][:1])
    compose_wall_edit(page)
    name = page.locator("#rule-name textarea")
    name.press("Control+a")
    name.press_sequentially("Sage for the lounge")  # typed key by key (fill() sends no input event Gradio hears), never saved
    page.get_by_label("Product seller").check()
    expect(page.get_by_role("button", name="Product 🔒", exact=True)).to_be_visible()  # the seller palette
    page.wait_for_timeout(1500)  # the switch's draft reaches the browser's store
    page.reload(wait_until="domcontentloaded")
    expect(page.locator("#header")).to_contain_text("credits")
    expect(page.get_by_label("Product seller")).to_be_checked()  # where the work was left
    expect(page.get_by_role("button", name="Product 🔒", exact=True)).to_be_visible()
    page.get_by_label("Interior", exact=True).check()
    expect(page.get_by_role("button", name="Wall", exact=True)).to_be_visible()
    expect(page.locator("#edits")).to_contain_text("Wall → Recolour")
    expect(page.locator("#edits")).to_be_visible()
    expect(page.locator("#rule-name textarea")).to_have_value("Sage for the lounge")
    close(page)


def test_a_refusal_is_a_toast_and_leaves_no_marks(browser, server, setup):
    from playwright.sync_api import expect
    page = open_page(browser, server)
    page.locator("#apply").click()  # no photos yet: refused
    expect(page.locator(".toast-body").first).to_contain_text("photo")
    no_error_marks(page)
    upload(page, setup["photos"][:2])
    compose_wall_edit(page)
    page.locator("#apply").click()
    page.locator("#apply").click()  # a second job while the first runs: the free plan runs one at a time
    expect(page.locator("#job .s3-percent")).to_have_text("100 %", timeout=240_000)
    expect(page.locator("#results .thumbnail-item")).to_have_count(2)
    expect(page.locator("#export-button")).to_be_visible()
    no_error_marks(page)
    close(page)


def test_dropdowns_tab_on_thresholds_clamp_and_the_language_stays(browser, server, setup):
    "Tab out of an open dropdown reaches the next control and closes it; a threshold typed past 1 is taken as 1 without an "
    "error; a refusal in Korean says it in Korean; the language survives a reload."
    from playwright.sync_api import expect
    page = open_page(browser, server)
    concept = page.locator("#edit-concept input").first
    concept.focus()
    expect(concept).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Tab")
    expect(page.locator("#edit-action input").first).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.locator("input[aria-expanded=true]")).to_have_count(0)  # no menu left open behind the focus
    upload(page, setup["photos"][:1])
    page.get_by_role("button", name="Wall", exact=True).click()
    expect(page.locator(".s3-card").first).to_be_visible()
    box = page.locator("#threshold input[type=number]")
    box.press("Control+a")
    box.press_sequentially("5")
    box.press("Enter")
    expect(box).to_have_value("1")
    no_error_marks(page)
    page.get_by_label("한국어").check()
    expect(page.locator("#samples-button")).to_have_text("샘플 사진으로 해 보기")
    page.locator("#save-rule").click()  # no edits yet: refused, in Korean
    expect(page.locator(".toast-body").first).to_contain_text("먼저 편집을 추가하세요")
    page.wait_for_timeout(1500)  # the choice reaches the browser's store
    page.reload(wait_until="domcontentloaded")
    expect(page.locator("#samples-button")).to_have_text("샘플 사진으로 해 보기")
    close(page)


def test_the_primary_action_fits_the_window_and_a_phone_does_not_scroll_sideways(browser, server, setup):
    from playwright.sync_api import expect
    page = open_page(browser, server)

    def inside() -> bool:
        box = page.locator("#apply").bounding_box()
        return box is not None and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= 1440 and box["y"] + box["height"] <= 900
    assert inside(), page.locator("#apply").bounding_box()  # the empty page
    upload(page, setup["photos"][:1])
    page.get_by_role("button", name="Wall", exact=True).click()
    expect(page.locator(".s3-card")).to_have_count(12)
    assert inside(), page.locator("#apply").bounding_box()  # with 12 cards shown
    page.screenshot(path=ARTIFACTS / "work-1440x900.png")
    close(page)

    phone = open_page(browser, server, width=390, height=844)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.locator("#photos input[type=file]").set_input_files([str(setup["photos"][0])])
    expect(phone.locator("#strip .thumbnail-item")).to_have_count(1)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=ARTIFACTS / "work-phone.png", full_page=True)
    phone.screenshot(path=DOCS / "phone.png")  # README: the phone layout
    close(phone)


def test_switching_domain_keeps_each_domains_draft(browser, server, setup):
    "Also: the sample photos are one click away."
    from playwright.sync_api import expect
    page = open_page(browser, server)
    page.locator("#samples-button").click()
    expect(page.locator("#strip .thumbnail-item")).to_have_count(2)
    expect(page.locator("#canvas img").first).to_be_visible()
    expect(page.locator("#apply")).to_have_text("Apply to 2 photo(s) · 2 credit(s)")
    compose_wall_edit(page)
    page.locator("#domain").get_by_label("Product seller").check()
    expect(page.get_by_role("button", name="Product 🔒", exact=True)).to_be_visible()
    expect(page.get_by_text("Wall → Recolour")).to_have_count(0)  # the seller's own (empty) draft
    page.locator("#domain").get_by_label("Interior").check()
    expect(page.locator("#edits")).to_contain_text("Wall → Recolour")  # the interior draft came back
    page.locator("#apply").click()
    expect(page.locator("#job .s3-percent")).to_have_text("100 %", timeout=240_000)
    expect(page.locator("#results .thumbnail-item")).to_have_count(2)
    page.locator("#domain").get_by_label("Product seller").check()  # the interior results are not the seller's
    expect(page.locator("#results")).to_be_hidden()
    expect(page.locator("#job [data-status]")).to_have_count(0)
    page.locator("#domain").get_by_label("Interior").check()  # … and come back with their domain
    expect(page.locator("#job [data-status=done]")).to_be_attached()
    expect(page.locator("#results .thumbnail-item")).to_have_count(2)
    close(page)


def test_axe_finds_no_critical_or_serious_violation(browser, server):
    page = open_page(browser, server)
    found = axe_violations(page)
    (ARTIFACTS / "axe.json").write_text(json.dumps(found, indent=2))
    assert found == [], json.dumps(found, indent=2)
    close(page)


def test_the_whole_flow_by_keyboard_in_the_order_of_the_flow(browser, server):
    "Samples, a concept, a card protected, a swatch, the edit, Apply and Export, each reached with Tab and pressed with Enter; then axe on the full page."
    from playwright.sync_api import expect
    page = open_page(browser, server)
    regions = tab_to(page, "e.id === 'samples-button'")
    page.keyboard.press("Enter")
    expect(page.locator("#strip .thumbnail-item")).to_have_count(2)
    regions += tab_to(page, "e.tagName === 'BUTTON' && e.textContent.trim() === 'Wall'")
    page.keyboard.press("Enter")
    expect(page.locator(".s3-card").first).to_be_visible()
    regions += tab_to(page, "e.type === 'checkbox' && !!e.closest('.s3-protect')")  # the cards come next, not behind
    page.keyboard.press("Space")
    expect(page.locator("#canvas")).to_contain_text("· protected")
    regions += tab_to(page, "!!e.closest('#swatches') && e.classList.contains('thumbnail-item')")
    page.keyboard.press("Enter")
    regions += tab_to(page, "e.id === 'add-edit'")
    page.keyboard.press("Enter")
    expect(page.locator("#edits")).to_contain_text("Wall → Recolour")
    regions += tab_to(page, "e.id === 'apply'")
    page.keyboard.press("Enter")
    expect(page.locator("#job .s3-percent")).to_have_text("100 %", timeout=240_000)
    expect(page.locator("#results .thumbnail-item")).to_have_count(2)
    regions += tab_to(page, "e.id === 'export-button'")
    page.keyboard.press("Enter")
    expect(page.locator("#export a").first).to_be_visible()
    regions = [r for i, r in enumerate(regions) if i == 0 or regions[i - 1] != r]
    assert sorted(set(regions), key=FLOW.index) == FLOW, regions  # every step of the flow was passed …
    assert regions == sorted(regions, key=FLOW.index), regions  # … in the flow's order
    found = axe_violations(page)  # with cards, results, the jobs list and its pictures shown
    (ARTIFACTS / "axe-full.json").write_text(json.dumps(found, indent=2))
    assert found == [], json.dumps(found, indent=2)
    close(page)


def test_a_link_to_the_api_page_opens_it(browser, server):
    "/?view=api opens the API page, whose descriptions say how to send the token."
    from playwright.sync_api import expect
    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    page.goto(server.url + "/?view=api", wait_until="domcontentloaded")
    expect(page.locator(".api-docs")).to_be_visible(timeout=60_000)
    expect(page.locator(".api-docs")).to_contain_text("x-s3lib-token")
    close(page)
