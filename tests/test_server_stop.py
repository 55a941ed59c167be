"""Stopping the server while pages are open: every browser tab and gradio_client keeps a Gradio heartbeat
stream open, and the stop must end them instead of waiting out the grace period with a traceback."""
import threading
import time

import httpx
import pytest

from api_server import ServerProcess

pytestmark = pytest.mark.timeout(180)


def test_sigterm_with_open_heartbeat_streams_stops_cleanly(tmp_path, tiny_sam3):
    server = ServerProcess(tmp_path / "data", {"S3LIB_MODEL": str(tiny_sam3)}).start()
    opened, ended = threading.Barrier(3), []

    def hold_a_heartbeat(session: str) -> None:
        try:
            with httpx.stream("GET", f"{server.url}/gradio_api/heartbeat/{session}", timeout=120) as stream:
                lines = stream.iter_lines()
                next(lines)  # the stream is open
                opened.wait(30)
                for _ in lines: pass
        except httpx.HTTPError:
            pass
        ended.append(time.monotonic())

    holders = [threading.Thread(target=hold_a_heartbeat, args=(f"session{i}",), daemon=True) for i in range(2)]
    try:
        for holder in holders: holder.start()
        opened.wait(30)
        asked = time.monotonic()
        assert server.stop(timeout=25), server.log_tail()
        took = time.monotonic() - asked
    finally:
        server.kill()
    for holder in holders: holder.join(10)
    log = server.log_path.read_text(errors="replace")
    assert took < 10, f"the stop waited {took:.1f} s for open pages"
    assert "Traceback" not in log and "CancelledError" not in log, server.log_tail()
    assert len(ended) == 2
