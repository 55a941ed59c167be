"""Start s3lib: the REST API and the Gradio palette app at "/" on S3LIB_HOST:S3LIB_PORT, with the embedded
defaults (DuckDB and local objects under S3LIB_DATA_DIR, inline runner). On a Hugging Face Space (SPACE_ID is set)
the app is launched the Spaces way instead (`s3lib.server.launch_on_spaces`)."""
import os

for key, value in {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
    os.environ.setdefault(key, value)  # before anything imports gradio or huggingface_hub: no telemetry

ON_SPACES = bool(os.environ.get("SPACE_ID"))  # Hugging Face Spaces sets it
if ON_SPACES:
    try:
        import spaces  # noqa: F401 — first, before anything touches CUDA: ZeroGPU patches torch and gr.Blocks.launch
    except ImportError:
        pass  # a Space without the `spaces` package: s3lib.ui.zerogpu.gpu() is then a no-op

from s3lib.core import load_settings
from s3lib.server import launch_on_spaces, serve

if __name__ == "__main__":
    (launch_on_spaces if ON_SPACES else serve)(load_settings())
