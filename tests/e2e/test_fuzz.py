"""schemathesis against the service's own OpenAPI document: no 5xx, no crashed worker."""

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.server import BentoServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN = "fuzz-admin-token-0123456789"


def test_schemathesis_finds_no_server_errors(tiny_model, reply_adapter, tmp_path):
    (tmp_path / "adapters").mkdir()
    env = {"CROSSGUARD_MODEL": str(tiny_model), "CROSSGUARD_ADAPTERS": f"refuse={reply_adapter}",
           "CROSSGUARD_ADMIN_TOKEN": ADMIN, "CROSSGUARD_ADAPTER_ROOT": str(tmp_path / "adapters"),
           "CROSSGUARD_MAX_TOKENS_CAP": "64", "CROSSGUARD_DEFAULT_MAX_TOKENS": "16"}
    with BentoServer(env, tmp_path) as server:
        cli = Path(sys.executable).with_name("schemathesis")
        run = subprocess.run(
            [str(cli), "run", f"{server.url}/docs.json", "--checks", "not_a_server_error",
             "--max-examples", "30", "--seed", "7", "--workers", "1", "--no-color",
             "--max-time", "150", "--request-timeout", "60",
             "-H", f"Authorization: Bearer {ADMIN}"],
            capture_output=True, text=True, timeout=400,
        )
        summary = run.stdout[-3000:]
        assert run.returncode == 0, summary
        assert "generated" in summary and "failure" not in summary.split("Test cases:")[-1]
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        starts = server.log(tail=None).count("Service crossguard initialized")
        assert starts == 1, "a worker restarted"
