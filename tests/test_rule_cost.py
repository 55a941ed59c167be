"""`apply_rule` works where the instances are: on a 12 MP photo, 30 small instances cost their own area, not 30 frames,
and the promises hold while it does (protected pixels bit-identical, nothing outside an edit's reach changes).

The work is measured by what it reads, not by a clock: instance masks are wrapped in an array type that counts the
elements numpy operations read from them."""
import numpy as np
import pytest

from s3lib.edit import FEATHER_PIXELS
from s3lib.core import load_settings
from s3lib.presets import load_presets
from s3lib.rules import Rule, apply_rule
from s3lib.segment import Instance

HEIGHT, WIDTH = 3000, 4000


class CountingMask(np.ndarray):
    "A bool mask that counts the elements numpy operations read from it (slices are counting masks too)."
    read = 0

    def __array_ufunc__(self, ufunc, method, *inputs, **options):
        CountingMask.read += sum(x.size for x in inputs if isinstance(x, CountingMask))
        plain = [x.view(np.ndarray) if isinstance(x, CountingMask) else x for x in inputs]
        if "out" in options:
            options["out"] = tuple(x.view(np.ndarray) if isinstance(x, CountingMask) else x for x in options["out"])
        return getattr(ufunc, method)(*plain, **options)


@pytest.fixture(scope="module")
def scene():
    photo = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    instances, chairs = [], np.zeros((HEIGHT, WIDTH), bool)
    for index in range(30):  # 30 chairs of 60 x 60 pixels scattered over the photo
        mask = np.zeros((HEIGHT, WIDTH), bool)
        top, left = 200 + (index // 6) * 500, 200 + (index % 6) * 600
        mask[top:top + 60, left:left + 60] = True
        chairs |= mask
        instances.append(Instance("chair", index, 0.9, (left, top, left + 60, top + 60), mask.view(CountingMask)))
    person = np.zeros((HEIGHT, WIDTH), bool)
    person[230:400, 220:240] = True  # stands in front of chair 0
    instances.append(Instance("person", 0, 0.9, (220, 230, 240, 400), person.view(CountingMask)))
    rule = Rule.from_dict({"name": "blue chairs", "domain": "interior", "protect": ["person"],
                           "edits": [{"concept": "chair", "action": "recolor", "color": "#3050C0"}]}, load_presets(load_settings()))
    return photo, instances, rule, chairs, person


def test_thirty_small_instances_cost_their_area_not_thirty_frames(scene):
    photo, instances, rule, chairs, person = scene
    CountingMask.read = 0
    result = apply_rule(photo, instances, rule)
    area = sum(instance.area for instance in instances)
    assert CountingMask.read <= 4 * area, f"read {CountingMask.read:,} mask elements for instances of {area:,} pixels"
    assert CountingMask.read < HEIGHT * WIDTH  # less than one frame, where the old code read 31 frames
    edited = np.asarray(result.image)
    assert np.array_equal(edited[person], photo[person])  # protected: bit-identical
    reach = np.zeros((HEIGHT, WIDTH), bool)
    for instance in instances[:30]:
        rows, cols = instance.window
        reach[max(0, rows.start - FEATHER_PIXELS):rows.stop + FEATHER_PIXELS, max(0, cols.start - FEATHER_PIXELS):cols.stop + FEATHER_PIXELS] = True
    assert np.array_equal(edited[~reach], photo[~reach])  # nothing beyond the chairs' soft edges changed
    changed = (edited != photo).any(axis=2)
    assert result.report[0]["pixels_changed"] == int(changed.sum()) and changed[chairs & ~person].mean() > 0.9
    assert np.array_equal(result.masks["chair"], chairs & ~person) and np.array_equal(result.masks["protect"], person)
