"""A real s3lib server in a subprocess for the REST test suites (test_api_*.py) and the service benchmark:
`python app.py` on a free loopback port with a temporary data dir and known secrets, plus small HTTP helpers."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "test-jwt-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOP"
CALLBACK_SECRET = "test-callback-secret-9876543210-zyxwvutsrqpo"
FINISHED = ("done", "failed", "canceled", "expired")
RECOLOR_WALLS = {"edits": [{"concept": "wall", "action": "recolor", "color": "#EDE6DA"}], "protect": ["person"]}


def free_port() -> int:
    "A TCP port on 127.0.0.1 nobody listens on right now."
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    "`python app.py` with S3LIB_* settings from `env`; its output goes to `<data_dir>/server.log`."

    def __init__(self, data_dir: Path, env: dict | None = None, port: int | None = None):
        self.data_dir, self.port = Path(data_dir), port or free_port()
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_OFFLINE": "1",
                    "GRADIO_ANALYTICS_ENABLED": "False", "S3LIB_HOST": "127.0.0.1", "S3LIB_PORT": str(self.port),
                    "S3LIB_DATA_DIR": str(self.data_dir), "S3LIB_JWT_SECRET": JWT_SECRET,
                    "S3LIB_CALLBACK_SECRET": CALLBACK_SECRET, "S3LIB_SETTINGS": str(ROOT / "settings.ini"),
                    **(env or {})}
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / "server.log"

    @property
    def url(self) -> str: return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> "ServerProcess":
        "Start the server and wait until /health answers."
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code in (200, 503): return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the server did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 60.0) -> bool:
        "SIGTERM and wait; True if the shutdown was clean (requests finished, runner stopped, ledger closed)."
        if self.process is None or self.process.poll() is not None: return False
        self.process.send_signal(signal.SIGTERM)
        try: code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"the server did not stop within {timeout} s:\n{self.log_tail()}")
        # uvicorn re-raises the signal it caught once it has shut down, so a clean stop exits by SIGTERM
        return code in (0, -signal.SIGTERM) and "s3lib stopped" in self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        "SIGKILL: no shutdown at all, as in a crash."
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def log_tail(self, lines: int = 40) -> str:
        try: return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError: return "(no log)"


def png_bytes(width: int = 48, height: int = 32, color=(180, 90, 40), format: str = "PNG") -> bytes:
    "A small synthetic photo: two colours, so an edit has something to change."
    picture = Image.new("RGB", (width, height), color)
    picture.paste((40, 120, 200), (0, 0, width // 2, height))
    buffer = io.BytesIO()
    picture.save(buffer, format)
    return buffer.getvalue()


def error_of(response: httpx.Response) -> tuple[int, str | None]:
    "(status, error code) of an answer; the code is None when the body is not the API's error shape."
    try: code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError): code = None
    return response.status_code, code


class Client:
    "One user's view of the API over real HTTP."

    def __init__(self, base_url: str, token: str | None = None):
        self.http = httpx.Client(base_url=base_url, timeout=60)
        self.token = token
        self.user: dict | None = None

    @property
    def auth(self) -> dict: return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def sign_up(self) -> "Client":
        answer = self.http.post("/auth/anon")
        assert answer.status_code == 201, answer.text
        self.token, self.user = answer.json()["token"], answer.json()["user"]
        return self

    def get(self, path: str, **kwargs) -> httpx.Response: return self.http.get(path, headers=self.auth | kwargs.pop("headers", {}), **kwargs)
    def post(self, path: str, **kwargs) -> httpx.Response: return self.http.post(path, headers=self.auth | kwargs.pop("headers", {}), **kwargs)
    def put(self, path: str, **kwargs) -> httpx.Response: return self.http.put(path, headers=self.auth | kwargs.pop("headers", {}), **kwargs)
    def delete(self, path: str, **kwargs) -> httpx.Response: return self.http.delete(path, headers=self.auth | kwargs.pop("headers", {}), **kwargs)

    def me(self) -> dict:
        answer = self.get("/me")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def create_job(self, photos: list[bytes], rule: dict | None = None, rule_id: str | None = None,
                   domain: str = "interior", content_type: str = "image/png") -> dict:
        body = {"domain": domain, "items": [{"filename": f"photo-{i}.png", "content_type": content_type, "size": len(p)}
                                            for i, p in enumerate(photos)]}
        body |= {"rule_id": rule_id} if rule_id else {"rule": rule or RECOLOR_WALLS}
        answer = self.post("/jobs", json=body)
        assert answer.status_code == 201, answer.text
        return answer.json()

    def upload(self, job: dict, photos: list[bytes]) -> None:
        "PUT every photo through its presigned URL with exactly the headers the API returned."
        for upload, photo in zip(job["uploads"], photos):
            answer = httpx.put(upload["url"], content=photo, headers=upload["headers"], timeout=60)
            assert answer.status_code == 200, answer.text

    def uploaded_job(self, photos: list[bytes], **kwargs) -> str:
        "A job created, uploaded and confirmed; its id."
        job = self.create_job(photos, **kwargs)
        self.upload(job, photos)
        answer = self.post(f"/jobs/{job['id']}/confirm-upload")
        assert answer.status_code == 200, answer.text
        return job["id"]

    def wait(self, job_id: str, timeout: float = 240.0) -> dict:
        "Poll the job until it is finished; its last status."
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get(f"/jobs/{job_id}").json()
            if status["status"] in FINISHED: return status
            time.sleep(0.25)
        raise AssertionError(f"job {job_id} did not finish within {timeout} s: {json.dumps(status)[:500]}")


