"""Benchmark s3lib.edit on a 12 MP synthetic room photo against a straightforward reference.

Three edits, as a rule would run them: repaint the wall (`recolor`), white background around the
sofa (`fill`, the seller case), take the vase out (`remove`). The reference does the same work the
plain way: float64 numpy over the whole image, a Pillow max-filter + Gaussian feather, and
`cv2.inpaint` at full resolution. Both run in this process, one after the other, so the ratios
compare like with like even when other work shares the CPU.

Targets: s3lib's three edits together take <= 1 s on 2 cores, and are >= 3x faster than the reference.

Then the rule layer: three edits with known masks — recolour the wall (top half, 6 MP), recolour the floor
(bottom half minus an object, 6 MP), remove the object (0.12 MP) — timed as the three operations alone and as
one `apply_rule` (instances, protection bookkeeping, reports). Targets: overhead = apply_rule / sum of the
operations <= 1.3, and the three edits through apply_rule <= 0.3 s on 2 cores. Then the same with mask edges
refined at photo resolution first (`refine_edges=True`, the default setting): <= 1 s.

    python benchmarks/edit.py [--repeat 3] [--preview preview.png]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import cv2
import numpy as np
from PIL import Image, ImageFilter

from s3lib.core import load_settings, parse_color
from s3lib.edit import fill, recolor, remove
from s3lib.presets import load_presets
from s3lib.rules import Rule, apply_rule
from s3lib.segment import Instance

HEIGHT, WIDTH = 3000, 4000
WALL_COLOR = "#7A9A7E"  # sage
BACKGROUND_COLOR = "#FFFFFF"
TARGET_SECONDS = 1.0
TARGET_RATIO = 3.0
TARGET_OVERHEAD, TARGET_RULE_SECONDS = 1.3, 0.3


def synthetic_room(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    "A 4000×3000 room: lit plaster wall, plank floor, sofa with its shadow, a vase; and the three masks."
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:HEIGHT, :WIDTH].astype(np.float32)
    # window light from the left, a little darker towards the ceiling and the corners
    light = (1.05 - 0.5 * x / WIDTH) * (0.9 + 0.1 * np.sin(np.pi * y / HEIGHT)) * (1 - 0.15 * ((x / WIDTH - 0.5) ** 2 + (y / HEIGHT - 0.5) ** 2))

    def grain(scale: int, strength: float, stretch: tuple = (1, 1)) -> np.ndarray:
        "Smooth noise made at low resolution and enlarged (cheap), strength relative to 1."
        small = rng.standard_normal((HEIGHT // (scale * stretch[0]) + 1, WIDTH // (scale * stretch[1]) + 1)).astype(np.float32)
        return 1 + strength * cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)

    horizon = 1900
    wall = np.array(parse_color("#D8CBB8"), np.float32) * (grain(3, 0.03) * grain(40, 0.04))[..., None]
    plank = (y - horizon) // 160
    floor_tone = 0.85 + 0.15 * np.sin(plank * 12.9898) ** 2
    floor = np.array(parse_color("#A27850"), np.float32) * (floor_tone * grain(4, 0.08, (1, 30)))[..., None]
    floor[((y - horizon) % 160) < 4] *= 0.6
    photo = np.where((y < horizon)[..., None], wall, floor) * light[..., None]

    sofa = ((x - 2000) / 900) ** 4 + ((y - 1800) / 520) ** 4 < 1
    shadow = (((x - 2000) / 1050) ** 2 + ((y - 2330) / 120) ** 2 < 1) & ~sofa
    photo[shadow] *= 0.55
    cushion = 0.75 + 0.25 * np.abs(np.sin(np.pi * (x - 1100) / 600))
    photo[sofa] = (np.array(parse_color("#3C4A5E"), np.float32) * (cushion * light)[..., None] * grain(2, 0.05)[..., None])[sofa]

    vase = ((x - 3400) / 170) ** 2 + ((y - 1750) / 380) ** 2 < 1
    photo[vase] = (np.array(parse_color("#B3362B"), np.float32) * (1.1 - 0.6 * np.abs(x - 3340) / 230)[..., None])[vase]
    image = np.clip(np.rint(photo), 0, 255).astype(np.uint8)
    masks = {"wall": (y < horizon) & ~sofa & ~vase, "background": ~sofa, "vase": vase}
    return image, masks


# --- the reference: the same edits written the straightforward way ---------------------------------

def _to_linear(values: np.ndarray) -> np.ndarray:
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)

def _to_srgb(values: np.ndarray) -> np.ndarray:
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * np.clip(values, 0, None) ** (1 / 2.4) - 0.055)

def reference_feather(mask: np.ndarray) -> np.ndarray:
    "Soft alpha (float64 H×W): 1 inside the mask, fading over ~2 px outside (Pillow max filter + blur)."
    grown = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(5))
    alpha = np.asarray(grown.filter(ImageFilter.GaussianBlur(1)), np.float64) / 255
    return np.where(mask, 1.0, alpha)

def reference_composite(image: np.ndarray, edited: np.ndarray, mask: np.ndarray) -> np.ndarray:
    alpha = reference_feather(mask)[..., None]
    return np.rint(image * (1 - alpha) + edited * alpha).astype(np.uint8)

def reference_recolor(image: np.ndarray, mask: np.ndarray, color: str) -> np.ndarray:
    linear = _to_linear(image / 255.0)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722])
    ratio = (luminance + 0.01) / (luminance[mask].mean() + 0.01)
    target = _to_linear(np.array(parse_color(color)) / 255.0)
    edited = np.clip(_to_srgb(np.clip(ratio[..., None] * target, 0, 1)) * 255, 0, 255)
    return reference_composite(image, edited, mask)

def reference_fill(image: np.ndarray, mask: np.ndarray, color: str) -> np.ndarray:
    edited = np.broadcast_to(np.array(parse_color(color), np.float64), image.shape)
    return reference_composite(image.astype(np.float64), edited, mask)

def reference_remove(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    edited = cv2.inpaint(image, mask.astype(np.uint8), 3, cv2.INPAINT_NS)
    return reference_composite(image.astype(np.float64), edited.astype(np.float64), mask)


# --- measuring ----------------------------------------------------------------------------------------

def timed(function, repeat: int) -> tuple[list[float], np.ndarray]:
    "Run `function` `repeat` times; the durations in seconds and the last result."
    durations = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        durations.append(time.perf_counter() - start)
    return durations, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each s3lib edit (best and median are shown)")
    parser.add_argument("--reference-repeat", type=int, default=1, help="runs of each reference edit")
    parser.add_argument("--preview", help="write a small before/after sheet of the three edits to this PNG file")
    args = parser.parse_args()
    if args.repeat < 1 or args.reference_repeat < 1: parser.error("--repeat and --reference-repeat must be at least 1")

    start = time.perf_counter()
    image, masks = synthetic_room()
    print(f"synthetic photo {WIDTH}x{HEIGHT} ({WIDTH * HEIGHT / 1e6:.0f} MP) built in {time.perf_counter() - start:.1f} s; "
          f"mask areas: " + ", ".join(f"{name} {mask.mean():.0%}" for name, mask in masks.items()))
    print(f"cpu cores visible: {os.cpu_count()}, opencv threads: {cv2.getNumThreads()}")
    edits = [
        ("recolor", lambda: recolor(image, masks["wall"], WALL_COLOR), lambda: reference_recolor(image, masks["wall"], WALL_COLOR), "wall"),
        ("fill", lambda: fill(image, masks["background"], BACKGROUND_COLOR), lambda: reference_fill(image, masks["background"], BACKGROUND_COLOR), "background"),
        ("remove", lambda: remove(image, masks["vase"]), lambda: reference_remove(image, masks["vase"]), "vase"),
    ]
    print(f"\n{'edit':<8} {'s3lib best':>11} {'median':>8} {'reference':>10} {'ratio':>7}  mean |s3lib - reference| in mask")
    totals = {"best": 0.0, "median": 0.0, "reference": 0.0}
    results = []
    for name, ours, reference, mask_name in edits:
        our_times, our_result = timed(ours, args.repeat)
        reference_times, reference_result = timed(reference, args.reference_repeat)
        best, median, reference_best = min(our_times), statistics.median(our_times), min(reference_times)
        totals["best"] += best; totals["median"] += median; totals["reference"] += reference_best
        mask = masks[mask_name]
        difference = np.abs(our_result[mask].astype(int) - reference_result[mask].astype(int)).mean()
        print(f"{name:<8} {best * 1000:>9.0f}ms {median * 1000:>6.0f}ms {reference_best * 1000:>8.0f}ms {reference_best / best:>6.1f}x"
              f"  {difference:.1f} levels")
        results.append((name, our_result))
    ratio = totals["reference"] / totals["best"]
    print(f"{'total':<8} {totals['best'] * 1000:>9.0f}ms {totals['median'] * 1000:>6.0f}ms {totals['reference'] * 1000:>8.0f}ms {ratio:>6.1f}x")
    print(f"\ntarget total <= {TARGET_SECONDS:.1f} s: {'met' if totals['best'] <= TARGET_SECONDS else 'NOT met'} "
          f"(best {totals['best']:.3f} s, median {totals['median']:.3f} s)")
    print(f"target >= {TARGET_RATIO:.0f}x the reference: {'met' if ratio >= TARGET_RATIO else 'NOT met'} ({ratio:.1f}x)")

    if args.preview:
        thumbnails = [cv2.resize(picture, (WIDTH // 8, HEIGHT // 8), interpolation=cv2.INTER_AREA)
                      for picture in [image] + [result for _, result in results]]
        sheet = np.concatenate([np.concatenate(thumbnails[:2], 1), np.concatenate(thumbnails[2:], 1)], 0)
        Image.fromarray(sheet).save(args.preview)
        print(f"preview: {args.preview} (original, recolor | fill, remove)")
    rule_overhead(image, args.repeat)


def rule_overhead(image: np.ndarray, repeat: int) -> None:
    "The three rule edits as operations alone and through apply_rule, in this run; their ratio."
    y, x = np.mgrid[:HEIGHT, :WIDTH]
    plant = ((x - 2600) / 200) ** 2 + ((y - 2300) / 190) ** 2 < 1  # ~0.12 MP
    wall, floor = y < HEIGHT // 2, (y >= HEIGHT // 2) & ~plant
    instances = [Instance.from_mask(concept, mask) for concept, mask in (("wall", wall), ("floor", floor), ("plant", plant))]
    for instance in instances: instance.window  # found at segmentation time, with the masks
    rule = Rule.from_dict({"name": "benchmark", "domain": "interior", "edits": [
        {"concept": "wall", "action": "recolor", "color": WALL_COLOR}, {"concept": "floor", "action": "recolor", "color": "#8A6A4A"},
        {"concept": "plant", "action": "remove"}]}, load_presets(load_settings()))
    operations = [("recolor wall", lambda: recolor(image, wall, WALL_COLOR)),
                  ("recolor floor", lambda: recolor(image, floor, "#8A6A4A")), ("remove plant", lambda: remove(image, plant))]
    print(f"\nrule layer: {'edit':<14} {'best':>7}")
    alone = 0.0
    for name, run in operations:
        best = min(timed(run, repeat)[0])
        alone += best
        print(f"            {name:<14} {best * 1000:>5.0f}ms")
    through = min(timed(lambda: apply_rule(image, instances, rule), repeat)[0])
    overhead = through / alone
    print(f"            {'operations':<14} {alone * 1000:>5.0f}ms")
    print(f"            {'apply_rule':<14} {through * 1000:>5.0f}ms")
    print(f"target overhead apply_rule / operations <= {TARGET_OVERHEAD}: {'met' if overhead <= TARGET_OVERHEAD else 'NOT met'} ({overhead:.2f})")
    print(f"target three edits through apply_rule <= {TARGET_RULE_SECONDS} s: "
          f"{'met' if through <= TARGET_RULE_SECONDS else 'NOT met'} ({through:.3f} s)")
    refined = min(timed(lambda: apply_rule(image, instances, rule, refine_edges=True), repeat)[0])
    print(f"            {'+ refined edges':<14} {refined * 1000:>5.0f}ms  (apply_rule(refine_edges=True): the masks refined first)")
    print(f"target three edits with refined mask edges <= {TARGET_SECONDS} s: {'met' if refined <= TARGET_SECONDS else 'NOT met'} ({refined:.3f} s)")


if __name__ == "__main__":
    main()
