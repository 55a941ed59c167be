"""Benchmark s3lib's split decode against `Sam3Model.forward`, on the same cached vision features, in torch.

`s3lib.decode` computes the concept-free half of SAM 3's decode (the DETR encoder's first self-attention, the pixel
decoder's skip convolutions) once per photo and the rest per concept, with the upsample convolutions run as 2x2
phase kernels and the instance projection folded into the mask embeddings. This prints, in one run on one photo:
one concept's decode both ways (the ratio), the photo half's one-off cost, a palette of 5 and 10 concepts both ways,
5 concepts decoded as one batch against one at a time (whether the segmenter's `batch_size` above 1 pays here), and
how far the outputs differ (relative error; float32 is exact to rounding, bfloat16 within its rounding).

    python benchmarks/decode.py                    # full size, dtype auto's pick (bfloat16 where it pays, else float32)
    python benchmarks/decode.py --dtype float32
    python benchmarks/decode.py --size small       # quicker

The model has random weights (same shapes and FLOPs as facebook/sam3 at --size full); only timings mean something.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import torch
from transformers import Sam3Model, Sam3Processor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from benchmarks.segment import PROMPTS, photo, saved_model
from s3lib.backends import DECODER_OUTPUTS, _best_of
from s3lib.decode import PhotoFeatures, decode, photo_features
from s3lib.segment import _pick_dtype, _stack


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("tiny", "small", "full"), default="full")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="where the random model is saved (default: the temp folder, shared with segment.py)")
    args = parser.parse_args(argv)
    dtype = _pick_dtype(args.dtype, torch.device("cpu"))
    folder = saved_model(args.size, args.model_dir or Path(tempfile.gettempdir()) / f"s3lib-bench-sam3-{args.size}")
    model = Sam3Model.from_pretrained(folder, dtype=dtype).eval()
    processor = Sam3Processor.from_pretrained(folder)
    print(f"s3lib decode benchmark | torch {torch.__version__} | {torch.get_num_threads()} threads | size {args.size} | "
          f"{str(dtype).removeprefix('torch.')} | minimum of {args.repeats}")
    pixel_values = processor.image_processor([photo(3, 1280, 960)], return_tensors="pt").pixel_values.to(dtype)
    tokens = processor.tokenizer(PROMPTS[:10], padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        vision = model.get_vision_features(pixel_values=pixel_values)
        text = model.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).pooler_output
        prompts = [(text[i:i + 1], tokens.attention_mask[i:i + 1]) for i in range(len(PROMPTS[:10]))]

        def forward(i):
            embeds, mask = prompts[i]
            return model(vision_embeds=vision, text_embeds=BaseModelOutputWithPooling(pooler_output=embeds), attention_mask=mask)

        shared = photo_features(model, vision.fpn_hidden_states, vision.fpn_position_encoding)
        forward(0), decode(model, shared, *prompts[0])  # warm-up
        whole = _best_of(lambda: forward(0), args.repeats)
        half = _best_of(lambda: photo_features(model, vision.fpn_hidden_states, vision.fpn_position_encoding), args.repeats)
        split = _best_of(lambda: decode(model, shared, *prompts[0]), args.repeats)
        reference, ours = forward(1), decode(model, shared, *prompts[1])
        together = PhotoFeatures(*(_stack([field] * 5) for field in shared))  # the segmenter's own batching of one photo
        batched = _best_of(lambda: decode(model, together, text[:5], tokens.attention_mask[:5]), args.repeats)
        singles = _best_of(lambda: [decode(model, shared, *prompts[i]) for i in range(5)], args.repeats)
    print(f"\none concept's decode on cached vision features: Sam3Model.forward {whole:.2f} s, s3lib.decode {split:.2f} s "
          f"-> {whole / split:.2f}x; the photo half, once per photo: {half:.2f} s")
    for k in (5, 10):
        print(f"a palette of {k:2d} concepts: {k * whole:6.2f} s -> {half + k * split:6.2f} s ({k * whole / (half + k * split):.2f}x)")
    print(f"5 concepts as one batched decode {batched:.2f} s, one at a time {singles:.2f} s: batching is "
          f"{singles / batched:.2f}x (above 1 it pays: the segmenter's batch_size; it is 1 on a CPU)")
    errors = {name: float((getattr(ours, name).float() - getattr(reference, name).float()).norm()
                          / getattr(reference, name).float().norm().clamp_min(1e-12)) for name in DECODER_OUTPUTS}
    print("relative difference to Sam3Model.forward: " + ", ".join(f"{name} {error:.2e}" for name, error in errors.items()))
    print("(random weights: the outputs are meaningless; the timings and the difference are what this measures)")


if __name__ == "__main__":
    main()
