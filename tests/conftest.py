"""Shared pytest fixtures. The environment is closed before anything imports transformers or gradio:
no hub, no telemetry, no version checks — tests must never reach the network."""
import os

for key, value in {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                   "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ[key] = value

import tempfile

# exported graphs and kept text embeddings: one cache for the session and every server it starts, none in ~/.cache
os.environ.setdefault("S3LIB_MODEL_CACHE_DIR", tempfile.mkdtemp(prefix="s3lib-test-models-"))

import pytest


@pytest.fixture(scope="session")
def tiny_sam3(tmp_path_factory):
    "Path of a tiny random SAM 3 checkpoint, built once per test session; loads with from_pretrained."
    from s3lib.testing import make_tiny_sam3
    return make_tiny_sam3(tmp_path_factory.mktemp("tiny-sam3") / "model")


NANIO_ACCESS_KEY, NANIO_SECRET_KEY = "s3lib-test-access", "s3lib-test-secret-key"


@pytest.fixture(scope="session")
def nanio_endpoint(tmp_path_factory):
    """URL of a nanio S3 server (it enforces SigV4 presigned URLs) on a free loopback port, with keys
    NANIO_ACCESS_KEY / NANIO_SECRET_KEY; skipped, with nanio's own output, only if it cannot start."""
    import socket
    import subprocess
    import sys
    import time
    from api_server import free_port
    folder, port = tmp_path_factory.mktemp("nanio"), free_port()
    log = open(folder / "nanio.log", "wb")
    env = {**os.environ, "NANIO_ACCESS_KEY": NANIO_ACCESS_KEY, "NANIO_SECRET_KEY": NANIO_SECRET_KEY}
    output = lambda: (folder / "nanio.log").read_text(errors="replace")[-800:]
    try:
        process = subprocess.Popen([sys.executable, "-m", "nanio", "serve", "--host", "127.0.0.1", "--port", str(port),
                                    "--data-dir", str(folder / "data"), "--no-access-log", "--log-level", "warning"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    except OSError as e:
        pytest.skip(f"cannot start nanio: {e}")
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            log.close()
            pytest.skip(f"nanio exited with code {process.returncode} (is it installed? pip install nanio): {output()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                process.kill(); process.wait(); log.close()
                pytest.skip(f"nanio did not listen on port {port} within 20 s: {output()}")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    try: process.wait(timeout=10)
    except subprocess.TimeoutExpired: process.kill(); process.wait()
    log.close()
