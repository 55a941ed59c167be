"""Start s3lib: the REST API (and the Gradio app at "/" once s3lib.ui exists) on S3LIB_HOST:S3LIB_PORT
with the embedded defaults (DuckDB and local objects under S3LIB_DATA_DIR, inline runner).
On a Hugging Face Space (SPACE_ID is set) the Gradio app is launched the Spaces way instead, with the REST API added."""
import os
import signal

for key, value in {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
    os.environ.setdefault(key, value)  # before anything imports gradio or huggingface_hub: no telemetry

ON_SPACES = bool(os.environ.get("SPACE_ID"))  # Hugging Face Spaces sets it
if ON_SPACES:
    try:
        import spaces  # noqa: F401 — first, before anything touches CUDA: ZeroGPU patches torch and gr.Blocks.launch
    except ImportError:
        pass  # a Space without the `spaces` package: s3lib.ui.gpu() is then a no-op

from s3lib.core import load_settings
from s3lib.server import serve


def launch_on_spaces(settings) -> None:
    """Launch with `demo.launch()` (the Spaces hooks patch it) and add the REST API to the app it returns.
    SAM 3 runs through `s3lib.ui.run_segmenter`, the one `@spaces.GPU` function, for the page, the API and the jobs."""
    from s3lib.api import api_router
    from s3lib.auth import ensure_secrets
    from s3lib.segment import Sam3Segmenter
    from s3lib.ui import SpacesSegmenter, build_demo, mount_options
    from s3lib.worker import create_service

    host = os.environ.get("SPACE_HOST")  # e.g. "owner-s3lib.hf.space": upload and result URLs must point there
    if host and not settings.server.public_url: settings = settings.replace(server={"public_url": f"https://{host}"})
    settings = ensure_secrets(settings)
    service = create_service(settings, lambda: SpacesSegmenter(Sam3Segmenter.from_settings(settings)))
    try:
        demo = build_demo(service, settings)
        app, _, _ = demo.launch(prevent_thread_lock=True, **mount_options())  # host and port: GRADIO_SERVER_NAME/PORT
        app.include_router(api_router(service))
        signal.signal(signal.SIGTERM, lambda number, frame: (_ for _ in ()).throw(KeyboardInterrupt))  # stop like Ctrl-C
        demo.block_thread()
    finally:
        service.close()


if __name__ == "__main__":
    launch_on_spaces(load_settings()) if ON_SPACES else serve(load_settings())
