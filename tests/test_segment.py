"""Segmenter tests that need processes, threads or many images (unit tests live in nbs/03_segment.ipynb).

Every model here is the tiny random checkpoint from `s3lib.testing`: its masks are meaningless, so these tests
check counts, caching, shapes, thresholds, concurrency and errors, never what was segmented.
"""
import io
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from s3lib.core import InvalidRequest, ModelUnavailable, load_settings
from s3lib.segment import Sam3Segmenter, label_map


def photo(width: int, height: int, seed: int) -> Image.Image:
    "A small synthetic photo: flat background, one darker block, a little noise."
    rng = np.random.default_rng(seed)
    pixels = np.full((height, width, 3), rng.integers(120, 250, 3), np.uint8)
    pixels[height // 3: 2 * height // 3, width // 4: 3 * width // 4] = rng.integers(0, 100, 3)
    pixels = np.clip(pixels.astype(int) + rng.integers(-5, 6, pixels.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def segmenter(tiny_sam3) -> Sam3Segmenter:
    "torch in float32: exact and the same whatever the decode batch, which these comparisons need."
    return Sam3Segmenter.from_pretrained(tiny_sam3, device="cpu", threshold=0.0, dtype="float32", backend="torch")


def fresh(segmenter: Sam3Segmenter, **options) -> Sam3Segmenter:
    "A new segmenter (own caches and counters) sharing the loaded model."
    return Sam3Segmenter(segmenter.model, segmenter.processor, threshold=0.0, **options)


def summary(instances) -> list:
    return [(i.key, round(i.score, 5), i.area, i.mask.shape) for i in instances]


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_import_is_cheap():
    result = run_python("import sys, s3lib.segment, s3lib.testing; "
                        "print(sorted(m for m in ('torch', 'transformers', 'torchvision') if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_hub_id_offline_says_how_to_fix(tmp_path):
    code = ("from s3lib.segment import Sam3Segmenter\n"
            "from s3lib.core import ModelUnavailable\n"
            "try: Sam3Segmenter.from_pretrained('facebook/sam3', device='cpu')\n"
            "except ModelUnavailable as e: print(e.status, e.message)\n")
    result = run_python(code, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))  # an empty cache
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("503 ")
    assert "HF_HUB_OFFLINE=1" in result.stdout
    assert ("facebook/sam3 is gated: request access at https://huggingface.co/facebook/sam3, then `hf auth login` "
            "(or set HF_TOKEN), or set S3LIB_MODEL (or the CLI's --model) to a local folder saved with save_pretrained") in result.stdout


@pytest.mark.parametrize("damage, expected", [
    (lambda folder: (folder / "model.safetensors").unlink(), "has no weights"),
    (lambda folder: (folder / "model.safetensors").write_bytes(b"\0" * 100), "cannot load SAM 3"),
    (lambda folder: (folder / "processor_config.json").unlink(), "cannot load SAM 3"),
    (lambda folder: (folder / "tokenizer.json").write_text("{"), "cannot load SAM 3"),
])
def test_damaged_checkpoints_are_unavailable(tiny_sam3, tmp_path, damage, expected):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    for file in tiny_sam3.iterdir(): (folder / file.name).write_bytes(file.read_bytes())
    damage(folder)
    with pytest.raises(ModelUnavailable, match=expected):
        Sam3Segmenter.from_pretrained(folder, device="cpu")


def test_from_settings(tiny_sam3):
    import torch
    settings = load_settings(env={}).replace(model={"id": str(tiny_sam3), "device": "cpu", "threshold": 0.0,
                                                    "mask_threshold": 0.25, "vision_cache_size": 3, "threads": 1})
    threads = torch.get_num_threads()
    try:
        segmenter = Sam3Segmenter.from_settings(settings)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert (segmenter.threshold, segmenter.mask_threshold, segmenter.model_id) == (0.0, 0.25, str(tiny_sam3))
    assert segmenter.cache_info()["vision"]["capacity"] == 3
    assert segmenter.max_pixels == settings.images.max_pixels
    assert segmenter.segment(photo(40, 30, 0), ["wall"])


def test_preset_concepts_and_their_thresholds(segmenter):
    from s3lib.presets import Concept
    wall = Concept(id="wall", labels={"en": "Wall", "ko": "벽"}, prompt="painted wall", threshold=1.0,
                   actions=("recolor",))
    rug = Concept(id="rug", labels={"en": "Rug", "ko": "러그"}, prompt="rug", threshold=0.0, actions=("recolor",))
    seg = fresh(segmenter)
    found = seg.segment(photo(64, 48, 1), [wall, rug])
    assert {i.concept for i in found} == {"rug"}  # the wall's own threshold 1.0 keeps nothing
    found = seg.segment(photo(64, 48, 1), [wall, rug], thresholds={"wall": 0.0})
    assert {i.concept for i in found} == {"wall", "rug"}
    assert seg.vision_passes == 1
    assert "painted wall" in seg.text_cache


def test_threads_share_one_model(segmenter):
    photos = [photo(96, 64, seed) for seed in range(3)]
    concepts = ["wall", "sofa"]
    expected = [summary(fresh(segmenter).segment(p, concepts)) for p in photos]
    shared = fresh(segmenter)
    results, errors = {}, []

    def work(worker: int):
        try:
            for round_ in range(2):
                for n in np.random.default_rng(worker * 10 + round_).permutation(len(photos)):
                    results.setdefault((worker, int(n)), []).append(summary(shared.segment(photos[n], concepts)))
        except Exception as e:  # surfaced below: an exception in a thread would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads: thread.start()
    for thread in threads: thread.join(timeout=120)
    assert not errors, errors
    assert all(not thread.is_alive() for thread in threads)
    for (_, n), answers in results.items():
        assert all(answer == expected[n] for answer in answers)
    assert shared.vision_passes == len(photos)  # each photo encoded once, whichever thread came first
    assert shared.cache_info()["text"]["misses"] == len(concepts)


def test_models_loaded_at_once_in_two_dtypes_keep_their_own(tiny_sam3):
    "transformers sets torch's process-wide default dtype while it builds a model: loads in threads must not mix them."
    import torch
    loaded, errors = {}, []
    def load(name, dtype):
        try: loaded[name] = Sam3Segmenter.from_pretrained(tiny_sam3, device="cpu", dtype=dtype, backend="torch")
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=load, args=(f"{dtype}-{i}", dtype)) for i in range(3) for dtype in ("bfloat16", "float32")]
    for thread in threads: thread.start()
    for thread in threads: thread.join()
    assert not errors and len(loaded) == 6
    for name, segmenter in loaded.items():
        wanted = getattr(torch, name.split("-")[0])
        assert {p.dtype for p in segmenter.model.parameters()} == {wanted}, name
        assert segmenter.segment(photo(64, 48, 0), ["wall"]) is not None  # a decode in its own dtype runs
    assert torch.get_default_dtype() == torch.float32


def test_vision_cache_is_bounded(segmenter):
    seg = fresh(segmenter, vision_cache_size=2)
    photos = [photo(50, 40, seed) for seed in range(5)]
    for p in photos: seg.segment(p, ["wall"])
    assert (seg.vision_passes, len(seg.vision_cache)) == (5, 2)
    seg.segment(photos[-1], ["lamp"])  # still cached
    assert seg.vision_passes == 5
    seg.segment(photos[0], ["wall"])  # evicted long ago
    assert seg.vision_passes == 6
    seg.clear_cache()
    seg.segment(photos[-1], ["wall"])
    assert seg.vision_passes == 7


def test_batch_with_repeated_photo_and_every_input_kind(segmenter, tmp_path):
    seg = fresh(segmenter, batch_size=3)
    room = photo(120, 90, 7)
    path = tmp_path / "room.png"
    room.save(path)
    as_bytes = path.read_bytes()
    results = seg.segment_batch([room, np.asarray(room), as_bytes, path, io.BytesIO(as_bytes)], ["wall", "sofa"])
    assert seg.vision_passes == 1  # five spellings of one photo
    assert all(summary(found) == summary(results[0]) for found in results)
    assert summary(results[0]) == summary(fresh(segmenter).segment(room, ["wall", "sofa"]))


def test_long_prompts_are_cut_to_the_model_context(segmenter):
    long_prompt = "a very long description of a mid-century walnut sideboard with brass handles " * 3
    found = fresh(segmenter).segment(photo(60, 40, 3), [long_prompt])
    assert found and all(i.concept == long_prompt for i in found)  # a string is the id as given


def test_bad_requests_name_the_field(segmenter):
    room = photo(60, 40, 4)
    with pytest.raises(InvalidRequest, match=r"thresholds\[wall\]"):
        segmenter.segment(room, ["wall"], thresholds={"wall": -0.1})
    with pytest.raises(InvalidRequest, match="not asked for: sofa"):
        segmenter.segment(room, ["wall"], negative_boxes={"sofa": [[0, 0, 5, 5]]})
    with pytest.raises(InvalidRequest, match=r"negative_boxes\[wall\]\[1\]"):
        segmenter.segment(room, ["wall"], negative_boxes={"wall": [[0, 0, 5, 5], [0, 0, float("nan"), 5]]})


def test_label_map_on_many_instances(segmenter):
    found = fresh(segmenter).segment(photo(80, 60, 5), ["wall", "floor", "sofa", "lamp"])
    labels = label_map(found, protect=["lamp"])
    assert labels.dtype == np.int32 and labels.shape == (60, 80)
    lamps = np.any([i.mask for i in found if i.concept == "lamp"], axis=0)
    assert {found[label - 1].concept for label in np.unique(labels[lamps])} == {"lamp"}
    best = max(range(len(found)), key=lambda i: (found[i].concept != "lamp", found[i].score))
    only_unprotected = found[best].mask & ~lamps
    assert (labels[only_unprotected] == best + 1).all()  # the best unprotected instance loses only to lamps


EXPORTED_START = """
import json, sys, time
from s3lib.segment import Sam3Segmenter
started = time.perf_counter()
seg = Sam3Segmenter.from_pretrained(sys.argv[1], threshold=0.0, cache_dir=sys.argv[2], prompts=["wall", "sofa"], backend="openvino")
found = seg.segment(sys.argv[3], ["wall", "sofa"])
print(json.dumps({"backend": seg.backend.name, "reason": seg.backend.reason, "seconds": time.perf_counter() - started,
                  "pinned": sorted(seg.pinned_text), "text_misses": seg.text_cache.info()["misses"],
                  "keys": [i.key for i in found], "scores": [i.score for i in found]}))
"""


def test_a_second_process_starts_from_the_cached_export(tiny_sam3, tmp_path):
    "The first process exports once; the next loads the export and the kept text embeddings, with the same results."
    import json
    pytest.importorskip("openvino")
    photo(160, 120, 3).save(tmp_path / "room.png")
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", EXPORTED_START, str(tiny_sam3), str(tmp_path / "cache"),
                               str(tmp_path / "room.png")], capture_output=True, timeout=300,
                              encoding="utf-8", errors="replace")  # progress bars draw with non-ASCII blocks
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["backend"] == second["backend"] == "openvino", first["reason"]
    assert "exported now" in first["reason"] and "cached export" in second["reason"], second["reason"]
    assert second["pinned"] == ["sofa", "wall"] and second["text_misses"] == 0  # no text encoder for the palette
    assert first["keys"] == second["keys"] and first["scores"] == second["scores"]
    assert len(list((tmp_path / "cache").glob("*/openvino-*/meta.json"))) == 1


def test_an_export_that_cannot_run_falls_back_to_torch(tiny_sam3, tmp_path, monkeypatch):
    "A failing export (here: the runtime crashes on load) leaves torch running, says why, and is not retried."
    import s3lib.backends as backends
    pytest.importorskip("onnxruntime")
    def crash(*args, **kwargs): raise RuntimeError("simulated runtime crash")
    monkeypatch.setattr(backends, "_export_in_child", crash)
    seg = Sam3Segmenter.from_pretrained(tiny_sam3, backend="onnxruntime", cache_dir=tmp_path, threshold=0.0)
    assert seg.backend.name == "torch" and "simulated runtime crash" in seg.backend.reason
    assert seg.segment(photo(64, 48, 1), ["wall"])  # torch answers
    again = Sam3Segmenter.from_pretrained(tiny_sam3, backend="onnxruntime", cache_dir=tmp_path)
    assert "failed before" in again.backend.reason and "Delete" in again.backend.reason


def test_instances_of_a_big_photo_hold_no_full_size_masks(segmenter):
    "On a 12 MP photo instances keep SAM 3's 288x288 probabilities; a window or a display size makes only those pixels."
    found = fresh(segmenter).segment(photo(4000, 3000, 5), ["wall", "sofa"])
    assert found and all(instance.shape == (3000, 4000) for instance in found)
    assert all(instance.__dict__["_mask"] is None for instance in found)  # nothing made at 12 MP yet
    assert sum(instance._soft.probabilities.nbytes for instance in found) <= len(found) * 288 * 288 * 4
    first = found[0]
    window = first.mask_in(slice(1000, 1100), slice(2000, 2300))
    assert window.shape == (100, 300) and np.array_equal(window, first.mask[1000:1100, 2000:2300])
    assert first.mask_at((400, 300)).shape == (300, 400)
    assert first.__dict__["_mask"] is None  # `mask` made a frame for the caller and kept none


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (runs where a GPU machine is lent)")
def test_cuda_gives_the_instances_the_cpu_gives(segmenter, tiny_sam3):
    "Every step on the GPU (pixel values made there, decode, post-processing) lands on the CPU's instances in float32."
    cuda = Sam3Segmenter.from_pretrained(tiny_sam3, device="cuda", threshold=0.0, dtype="float32", backend="torch")
    rooms = [photo(120, 90, seed) for seed in range(3)]
    concepts, boxes = ["wall", "sofa"], {"sofa": [[0, 0, 30, 30]]}
    on_cpu = fresh(segmenter).segment_batch(rooms, concepts, negative_boxes=boxes)
    on_gpu = cuda.segment_batch(rooms, concepts, negative_boxes=boxes)
    for want, got in zip(on_cpu, on_gpu):
        assert [i.key for i in got] == [i.key for i in want]
        assert np.allclose([i.score for i in got], [i.score for i in want], atol=1e-3)
        assert np.allclose([i.box for i in got], [i.box for i in want], atol=0.5)
        assert all(np.mean(g.mask != w.mask) < 0.01 for g, w in zip(got, want))
    bf16 = Sam3Segmenter.from_pretrained(tiny_sam3, device="cuda", threshold=0.0, backend="torch", batch_size=4)
    assert str(bf16.dtype) == "torch.bfloat16"
    assert len(bf16.segment_batch(rooms, concepts)) == 3  # the default GPU path, batched decodes, runs
