"""Shared pytest fixtures. The environment is closed before anything imports transformers or gradio:
no hub, no telemetry, no version checks — tests must never reach the network."""
import os

for key, value in {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                   "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ[key] = value

import pytest


@pytest.fixture(scope="session")
def tiny_sam3(tmp_path_factory):
    "Path of a tiny random SAM 3 checkpoint, built once per test session; loads with from_pretrained."
    from s3lib.testing import make_tiny_sam3
    return make_tiny_sam3(tmp_path_factory.mktemp("tiny-sam3") / "model")
