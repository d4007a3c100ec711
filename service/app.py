"""The BentoML service: lifecycle and thin OpenAI-compatible routes over `service.runtime`."""

from __future__ import annotations

from typing import Literal

import bentoml
from fastapi import Header, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from service.auth import require_admin, require_api_key
from service.http import build_openai_app
from service.instance import instance_dir, isolate_metrics
from service.schemas import (
    AdapterLoadRequest,
    CanaryRequest,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ModelCard,
    ModelList,
)
from service.settings import ServiceSettings
from service.streaming import relay
from service.traffic import patch as fix_bentoml_timeout

fix_bentoml_timeout()  # BentoML's request timeout kept every request's state for 10 min
settings = ServiceSettings()
run_folder = instance_dir(settings.run_dir)
isolate_metrics(run_folder)  # before any metric exists in this worker
openai_app = build_openai_app(settings.max_request_bytes)


@bentoml.asgi_app(openai_app, path="/v1")
@bentoml.service(
    name="crossguard",
    resources={"gpu": 1},
    traffic={"timeout": 600},
    http={"port": 3000},
)
class CrossGuard:
    """OpenAI-compatible multimodal chat over a VLM with textual-unlearning LoRA adapters."""

    def __init__(self) -> None:
        from service.runtime import Runtime

        self.runtime = Runtime(settings, run_folder)
        if bentoml.server_context.worker_index in (None, 1):
            self.runtime.probes.start()
            self.runtime.promote_at_startup()

    def __is_ready__(self) -> bool:
        return self.runtime.ready

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.runtime.probes.stop()

    @openai_app.get("/models")
    def list_models(self, authorization: str | None = Header(default=None)) -> ModelList:
        require_api_key(settings, authorization)
        return self.runtime.models()

    @openai_app.post("/chat/completions", response_model=ChatCompletionResponse)
    def chat_completions(self, request: ChatCompletionRequest,
                         authorization: str | None = Header(default=None),
                         x_crossguard_client: str | None = Header(default=None)):
        require_api_key(settings, authorization)
        result = self.runtime.chat(request, x_crossguard_client)
        if result.events is not None:
            return StreamingResponse(relay(result.events, result.streams),
                                     media_type="text/event-stream", headers=result.headers)
        return JSONResponse(result.response.model_dump(), headers=result.headers)

    @openai_app.post("/adapters", status_code=201)
    def load_adapter(self, request: AdapterLoadRequest,
                     authorization: str | None = Header(default=None)) -> ModelCard:
        require_admin(settings, authorization)
        return self.runtime.add_adapter(request)

    @openai_app.delete("/adapters/{name}", status_code=204)
    def unload_adapter(self, name: str, authorization: str | None = Header(default=None)):
        require_admin(settings, authorization)
        self.runtime.remove_adapter(name)
        return Response(status_code=204)

    @openai_app.post("/probes/run")
    def run_probes(self, wait: bool = False, authorization: str | None = Header(default=None)):
        """Run the probe battery now; `wait=true` answers with the report summary when done."""
        require_admin(settings, authorization)
        summary = self.runtime.probes.run_now(wait)
        if summary is None:
            return JSONResponse({"status": "started"}, status_code=202)
        return summary

    @openai_app.get("/probes/report")
    def probe_report(self, authorization: str | None = Header(default=None)) -> dict:
        """The latest finished probe run (ASR per adapter, family and modality, examples)."""
        require_admin(settings, authorization)
        return self.runtime.probes.latest()

    @openai_app.post("/adapters/{name}/promote")
    def promote_adapter(self, name: str, authorization: str | None = Header(default=None)):
        """Make `name` the default once it passes the promotion gate: 200 with the verdict,
        409 with it when a rule fails (the default stays)."""
        require_admin(settings, authorization)
        return self.runtime.rollout.promote(name)

    @openai_app.get("/rollout")
    def rollout_state(self, authorization: str | None = Header(default=None)) -> dict:
        """The default adapter, the canary (if any) and whether the gate is on."""
        require_admin(settings, authorization)
        return self.runtime.rollout.state()

    @openai_app.post("/rollout/canary")
    def start_canary(self, request: CanaryRequest,
                     authorization: str | None = Header(default=None)) -> dict:
        require_admin(settings, authorization)
        return self.runtime.rollout.start_canary(request.candidate, request.percent)

    @openai_app.post("/rollout/canary/{action}")
    def end_canary(self, action: Literal["promote", "rollback"],
                   authorization: str | None = Header(default=None)) -> dict:
        """End the canary: `promote` re-runs the gate on the candidate (409 and rolled back
        when it fails), `rollback` keeps the default."""
        require_admin(settings, authorization)
        return self.runtime.rollout.end_canary(action)

    @openai_app.get("/probes/gate")
    def gate_verdict(self, authorization: str | None = Header(default=None)) -> dict:
        """This server's last promotion-gate verdict."""
        require_admin(settings, authorization)
        return self.runtime.rollout.latest_verdict()

    @openai_app.get("/probes/report.html", response_class=HTMLResponse)
    def report_page(self, authorization: str | None = Header(default=None)) -> HTMLResponse:
        """The last probe run and gate verdict as a page for operators (no JavaScript)."""
        import time

        from service.pages import render_report_page

        require_admin(settings, authorization)
        return HTMLResponse(render_report_page(self.runtime.probes.latest_or_none(),
                                               self.runtime.rollout.latest_or_none(),
                                               time.time()))
