"""Run a real `bentoml serve` subprocess on loopback, for the benches and the end-to-end tests.

It lives in `bench/` because benches must not import `tests/`; tests may import `bench`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("CROSSGUARD_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
"""The vLLM CPU environment's interpreter (`make vllm-env`): vLLM pins an older transformers than
the project, so a server on `CROSSGUARD_ENGINE=vllm` runs from its own venv here."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BentoServer:
    """`bentoml serve` of the service in its own process group.

    Entering waits until `until` (`/readyz`, or `/livez` for a server expected to stay
    not-ready) answers 200. A server whose environment says `CROSSGUARD_ENGINE=vllm` (its own
    `env`, or this process's) runs from `VLLM_PYTHON`, which has vLLM installed.
    """

    def __init__(self, env: dict[str, str], workdir: Path, timeout_s: float = 120.0,
                 until: str = "/readyz", port: int | None = None):
        self.until = until
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"bentoml-{self.port}.log"
        self.env = {
            **os.environ,
            "BENTOML_HOME": str(workdir / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "True",
            "HF_HUB_OFFLINE": "1",
            "CROSSGUARD_HOME": str(workdir / "home"),
            "CROSSGUARD_PROBE_INTERVAL_S": "0",
            **env,
        }
        self.timeout_s = timeout_s
        self.engine = self.env.get("CROSSGUARD_ENGINE", "torch")
        self.python = str(VLLM_PYTHON) if self.engine == "vllm" else sys.executable
        if self.engine == "vllm" and not VLLM_PYTHON.is_file():
            raise FileNotFoundError(f"{VLLM_PYTHON} is missing: `make vllm-env` installs vLLM")
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> BentoServer:
        cmd = [self.python, "-m", "bentoml", "serve", "service.app:CrossGuard",
               "--host", "127.0.0.1", "--port", str(self.port)]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited early:\n{self.log()}")
            if self.answers(self.until):
                return self
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"not ready after {self.timeout_s}s:\n{self.log()}")

    def answers(self, path: str) -> bool:
        try:
            return httpx.get(f"{self.url}{path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self, tail: int | None = 8000) -> str:
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()

    def __exit__(self, *exc) -> None:
        self.stop()
