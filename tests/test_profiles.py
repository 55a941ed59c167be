"""Each marketplace profile of the seller preset, on crafted results: one that passes and one that fails, with the reason named."""
import numpy as np
import pytest

from s3lib.checks import run_checks
from s3lib.core import load_settings
from s3lib.presets import load_presets

PROFILES = {p.id: p for p in load_presets(load_settings())["seller"].profiles}
RULE = {"protect": ["product"], "edits": [{"concept": "background", "action": "fill", "color": "#FFFFFF"}]}


def shot(size=(1200, 1000), fill=0.9, background=(255, 255, 255), border=0):
    "A product photo: a brown product spanning `fill` of the height on `background`, with an optional dark frame."
    height, width = size
    pixels = np.full((height, width, 3), background, np.uint8)
    product = np.zeros((height, width), bool)
    top = int(height * (1 - fill) / 2)
    product[top:height - top, width // 3:2 * width // 3] = True
    pixels[product] = (120, 80, 40)
    if border: pixels[:border] = pixels[-border:] = pixels[:, :border] = pixels[:, -border:] = (30, 30, 30)
    return pixels, {"protect": product, "background": ~product}


def verdict(profile, pixels, masks):
    (found,) = run_checks([PROFILES[profile]], pixels, masks, RULE)
    return found["passed"], found["reasons"]


@pytest.mark.parametrize("profile, good, bad, reason", [
    ("amazon", shot(), shot(background=(250, 250, 250)), "of the background is not pure white (RGB 255)"),
    ("amazon", shot(), shot(fill=0.5), "product spans 50% of the frame (needs ≥ 85%)"),
    ("amazon", shot(), shot(size=(900, 700)), "longest side 900 px (needs ≥ 1000 px)"),
    ("amazon", shot(), shot(border=8), "a 8 px border of one colour frames the photo"),
    ("ebay", shot(size=(600, 500), fill=0.5), shot(size=(400, 300)), "longest side 400 px (needs ≥ 500 px)"),
    ("ebay", shot(size=(600, 500)), shot(size=(600, 500), border=5), "a 5 px border of one colour frames the photo"),
    ("shopify", shot(size=(4000, 3000)), shot(size=(4600, 3000)), "longest side 4600 px (at most 4472 px allowed)"),
])
def test_profile_passes_good_and_names_what_is_wrong(profile, good, bad, reason):
    passed, reasons = verdict(profile, *good)
    assert passed, reasons
    passed, reasons = verdict(profile, *bad)
    assert not passed and any(reason in r for r in reasons), reasons


def test_shopify_names_its_pixel_limit():
    passed, reasons = verdict("shopify", *shot(size=(4000, 3000)))
    assert passed and reasons == ["longest side 4000 px (at most 4472 px)", "12.0 MP (at most 20 MP)"]


def test_etsy_wants_a_real_photo_not_a_regeneration():
    pixels, masks = shot()
    assert verdict("etsy", pixels, masks)[0]
    passed, reasons = verdict("etsy", pixels, {"background": np.ones(pixels.shape[:2], bool)})
    assert not passed and reasons == ["100% of the photo was replaced: that is a regeneration, not an edit of a real photo"]
