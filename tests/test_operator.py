"""Plans are real: an operator grants credits and changes a user's plan with `s3lib users`, through the running server
(the user sees the new balance and limits on the next request) or on the data dir while no server runs; both are
recorded in the ledger, a retried request counts once, and nobody without the operator key can do either."""
import json
import os
import subprocess
import sys

import httpx
import pytest

from api_server import JWT_SECRET, ROOT, Client, ServerProcess, error_of
from s3lib.auth import operator_key, sign_callback
from s3lib.core import load_settings
from s3lib.ledger import Ledger

pytestmark = pytest.mark.timeout(300)


def users(server: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    "`python -m s3lib users …` with the server's settings, as an operator on its machine would run it."
    return subprocess.run([sys.executable, "-m", "s3lib", "users", *args], cwd=ROOT, env=server.env, capture_output=True,
                          text=True, timeout=120)


def test_operators_grant_credits_and_change_plans(tmp_path):
    server = ServerProcess(tmp_path / "data", {"S3LIB_RUNNER": "external"}).start()
    user = Client(server.url).sign_up()
    user_id = user.user["id"]
    try:
        granted = users(server, "grant", user_id, "50")
        assert granted.returncode == 0, granted.stderr
        assert json.loads(granted.stdout)["credits"] == 80 and user.me()["credits"] == 80
        moved = users(server, "plan", user_id, "pro")
        assert moved.returncode == 0, moved.stderr
        me = user.me()
        assert (me["plan"], me["limits"]["max_batch"], me["limits"]["max_rules"]) == ("pro", 100, 50)
        refused = users(server, "plan", user_id, "platinum")
        assert refused.returncode == 2 and "'platinum' is not a plan; plans: free, pro" in refused.stderr
        assert users(server, "grant", user_id, "0").returncode == 2
        assert users(server, "grant", "no-such-user", "5").returncode == 2
        raw = json.dumps({"user_id": user_id, "credits": 1000}).encode()
        assert error_of(httpx.post(f"{server.url}/operator/users/{user_id}/credits", content=raw)) == (401, "unauthorized")
        as_worker = sign_callback(raw, server.env["S3LIB_CALLBACK_SECRET"])  # the workers' secret is not the operator's
        assert error_of(httpx.post(f"{server.url}/operator/users/{user_id}/credits", content=raw, headers=as_worker)) == (401, "unauthorized")
        settings = load_settings(env={"S3LIB_JWT_SECRET": JWT_SECRET})
        signed = sign_callback(raw, operator_key(settings))
        assert httpx.post(f"{server.url}/operator/users/{user_id}/credits", content=raw, headers=signed).json()["credits"] == 1080
        assert httpx.post(f"{server.url}/operator/users/{user_id}/credits", content=raw, headers=signed).json()["credits"] == 1080  # a retry
        other = Client(server.url).sign_up().me()["id"]  # the same signed body, sent for another user: refused
        assert error_of(httpx.post(f"{server.url}/operator/users/{other}/credits", content=raw, headers=signed)) == (422, "invalid_request")
        extra = json.dumps({"user_id": user_id, "credits": 5, "note": "x"}).encode()
        answer = httpx.post(f"{server.url}/operator/users/{user_id}/credits", content=extra, headers=sign_callback(extra, operator_key(settings)))
        assert error_of(answer) == (422, "invalid_request")
    finally:
        assert server.stop(), server.log_tail()
    offline = users(server, "grant", user_id, "20")  # no server: the data dir is changed directly
    assert offline.returncode == 0 and json.loads(offline.stdout)["credits"] == 1100, offline.stderr
    ledger = Ledger(server.data_dir / "s3lib.duckdb")
    try:
        grants = ledger.rows("SELECT credits FROM credit_entries WHERE kind = 'grant' AND user_id = ? ORDER BY created_at", [user_id])
        assert [g["credits"] for g in grants] == [50, 1000, 20] and ledger.balance_errors() == []
        assert [(c["old_plan"], c["new_plan"]) for c in ledger.plan_changes(user_id)] == [("free", "pro")]
    finally:
        ledger.close()
