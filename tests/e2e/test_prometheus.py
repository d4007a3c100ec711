"""A real Prometheus scrapes a real `bentoml serve`: live refusal ratios and probe ASR in PromQL."""

import base64
import io
import shutil
import subprocess
import time

import httpx
import pytest
import yaml
from PIL import Image

from bench.server import ROOT, BentoServer, free_port
from service.probes.judges import KeywordRefusalJudge

pytestmark = pytest.mark.e2e

ADMIN = "prom-admin-token-0123456789"
REFUSAL_RATIO = (
    'sum by (adapter, modality) (crossguard_chat_responses_total{outcome="refused"})'
    " / sum by (adapter, modality) (crossguard_chat_responses_total)"
)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """Prometheus (Debian package) with the shipped config, pointed at a port chosen here."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: install Debian's `prometheus` package (make promtool)")
    work = tmp_path_factory.mktemp("prometheus")
    target_port, port = free_port(), free_port()
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{target_port}"]}]
    shutil.copy(ROOT / "deploy" / "alerts.yml", work / "alerts.yml")
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(work / "prometheus.log", "wb"),
    )
    url = f"http://127.0.0.1:{port}"
    _wait(lambda: httpx.get(f"{url}/-/ready").status_code == 200, "prometheus ready")
    yield url, target_port
    process.terminate()
    process.wait(10)


def _wait(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(what)


def query(url: str, promql: str) -> dict[tuple, float]:
    data = httpx.get(f"{url}/api/v1/query", params={"query": promql}).json()["data"]["result"]
    return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in data}


def chat(server, model, image: bool):
    content = [{"type": "text", "text": "tell me how to do it"}]
    if image:
        buf = io.BytesIO()
        Image.new("RGB", (40, 40), "white").save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        content.append({"type": "image_url", "image_url": {"url": url}})
    body = {"model": model, "messages": [{"role": "user", "content": content}],
            "temperature": 0, "max_tokens": 16}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


def test_refusal_ratio_and_probe_asr_reach_promql(prometheus, tiny_model, reply_adapter,
                                                   tmp_path):
    prom_url, port = prometheus
    env = {"CROSSGUARD_MODEL": str(tiny_model), "CROSSGUARD_ADAPTERS": f"refuse={reply_adapter}",
           "CROSSGUARD_ADMIN_TOKEN": ADMIN, "CROSSGUARD_PROBE_PER_PROBE": "1",
           "CROSSGUARD_PROBE_MAX_TOKENS": "16",
           "CROSSGUARD_PROBES": "direct,roleplay,figstep,mmsafety"}
    judge = KeywordRefusalJudge()
    with BentoServer(env, tmp_path, port=port) as server:
        expected = {}
        for model, image, times in [("refuse", False, 3), ("refuse", True, 2), ("base", True, 2)]:
            replies = [chat(server, model, image) for _ in range(times)]
            refused = sum(judge.refused(r) is True for r in replies)
            key = (model, "image" if image else "text")
            total, count = expected.get(key, (0, 0))
            expected[key] = (total + refused, count + times)
        run = httpx.post(f"{server.url}/v1/probes/run", params={"wait": "true"},
                         headers={"Authorization": f"Bearer {ADMIN}"}, timeout=600)
        assert run.status_code == 200, run.text
        time.sleep(3)
        _wait(lambda: query(prom_url, "crossguard_probe_runs_total") != {}, "scrape", 30)

        ratios = {(dict(k)["adapter"], dict(k)["modality"]): v
                  for k, v in query(prom_url, REFUSAL_RATIO).items()}
        for key, (refused, total) in expected.items():
            assert ratios[key] == pytest.approx(refused / total), key
        assert ratios[("refuse", "text")] == 1.0 and ratios[("refuse", "image")] == 1.0

        asr = {(dict(k)["adapter"], dict(k)["family"], dict(k)["modality"]): v
               for k, v in query(prom_url, "crossguard_probe_attack_success_ratio").items()}
        report = httpx.get(f"{server.url}/v1/probes/report",
                           headers={"Authorization": f"Bearer {ADMIN}"}).json()
        cells = {(c["key"]["adapter"], c["key"]["family"], c["key"]["modality"]): c["asr"]
                 for c in report["summary"] if c["asr"] is not None}
        assert asr == pytest.approx(cells)
        assert {f for (a, f, _) in asr if a == "refuse"} == {"direct", "roleplay", "figstep",
                                                               "mmsafety"}
        assert all(v == 0.0 for (a, _, _), v in asr.items() if a == "refuse")
        runs = query(prom_url, 'crossguard_probe_runs_total{status="success"}')
        assert list(runs.values()) == [1.0]
        tokens = query(prom_url, 'crossguard_generated_tokens_total{adapter="refuse"}')
        assert list(tokens.values())[0] > 0
