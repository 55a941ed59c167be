"""Start s3lib: the REST API (and the Gradio app at "/" once s3lib.ui exists) on S3LIB_HOST:S3LIB_PORT
with the embedded defaults (DuckDB and local objects under S3LIB_DATA_DIR, inline runner)."""
import os

for key, value in {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
    os.environ.setdefault(key, value)  # before anything imports gradio or huggingface_hub: no telemetry

from s3lib.core import load_settings
from s3lib.server import serve

# Hugging Face Spaces: the Spaces launch (demo.launch() with the REST routes on its app) goes here.

if __name__ == "__main__":
    serve(load_settings())
