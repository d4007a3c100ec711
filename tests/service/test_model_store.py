import shutil

import bentoml
import pytest
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models import ModelStore

from service.model_store import resolve_adapter_source, resolve_adapters
from service.vlm.engine import VLMEngine
from service.vlm.messages import Message
from service.vlm.protocol import SamplingParams
from tests.conftest import REPLY


@pytest.fixture()
def model_store(tmp_path, monkeypatch):
    """A model store of the test's own, so that the user's BentoML home is never touched."""
    store = ModelStore(tmp_path / "models")
    monkeypatch.setattr(BentoMLContainer.model_store, "get", lambda: store)
    return store


def test_folder_is_used_as_is(reply_adapter):
    assert resolve_adapter_source("a", str(reply_adapter)) == str(reply_adapter)


def test_tag_resolves_to_a_loadable_adapter(tiny_model, reply_adapter, model_store):
    with bentoml.models.create("refuse-adapter", labels={"kind": "fixed-reply"}) as stored:
        shutil.copytree(reply_adapter, stored.path, dirs_exist_ok=True)
    resolved = resolve_adapters({"refuse": "refuse-adapter:latest"})
    assert resolved["refuse"] != str(reply_adapter)
    engine = VLMEngine.from_pretrained(tiny_model, adapters=resolved)
    reply = engine.generate([Message.of("user", "hi")], SamplingParams(temperature=0.0), "refuse")
    assert reply.text.strip() == REPLY


def test_unknown_source_names_the_adapter(model_store):
    with pytest.raises(ValueError, match="adapter 'safety': 'nope:1' is neither"):
        resolve_adapter_source("safety", "nope:1")
