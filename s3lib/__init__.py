"""s3lib: concept-palette photo editing powered by SAM 3.

Importing s3lib is cheap: the model, torch and gradio load only when first used.
"""
__version__ = "0.1.0"

_LAZY = {"edit_image": "s3lib.pipeline", "edit_folder": "s3lib.pipeline", "load_settings": "s3lib.core",
         "load_image": "s3lib.core", "load_presets": "s3lib.presets", "Rule": "s3lib.rules",
         "apply_rule": "s3lib.rules", "Sam3Segmenter": "s3lib.segment"}

def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 's3lib' has no attribute {name!r}")

__all__ = list(_LAZY)
