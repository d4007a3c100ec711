import pytest
from pydantic import ValidationError

from service.settings import ServiceSettings


def test_adapters_parse_from_environment(monkeypatch):
    monkeypatch.setenv("CROSSGUARD_ADAPTERS", "safety=/a/b, other=/c")
    monkeypatch.setenv("CROSSGUARD_DEFAULT_ADAPTER", "safety")
    monkeypatch.setenv("CROSSGUARD_REMOTE_IMAGE_DOMAINS", "Images.Example.com,cdn.test")
    settings = ServiceSettings()
    assert settings.adapters == {"safety": "/a/b", "other": "/c"}
    assert settings.default_adapter == "safety"
    assert settings.remote_image_domains == ["images.example.com", "cdn.test"]


def test_model_path_defaults_to_built_model_under_home(tmp_path):
    settings = ServiceSettings(home=tmp_path)
    assert settings.model_path == str(tmp_path / "models" / "default")
    assert ServiceSettings(model="org/vlm").model_path == "org/vlm"


@pytest.mark.parametrize("kwargs,field", [
    ({"adapters": "broken"}, "adapters"),
    ({"adapters": {"a": "/x"}, "default_adapter": "b"}, "default_adapter"),
    ({"adapters": {"base": "/x"}}, "reserved"),
    ({"merge_adapter": True}, "merge_adapter"),
    ({"default_max_tokens": 50, "max_tokens_cap": 10}, "default_max_tokens"),
])
def test_invalid_combinations_name_the_field(kwargs, field):
    with pytest.raises(ValidationError, match=field):
        ServiceSettings(**kwargs)


def test_engine_settings_are_honoured_or_refused(monkeypatch):
    """Each engine refuses the other's settings instead of ignoring them."""
    monkeypatch.setenv("CROSSGUARD_ENGINE", "vllm")
    monkeypatch.setenv("CROSSGUARD_VLLM_ENGINE_ARGS", '{"enforce_eager": true}')
    assert ServiceSettings().vllm_engine_args == {"enforce_eager": True}
    for field, value in (("cpu_threads", 2), ("device", "cuda"), ("batch_wait_ms", 5.0),
                         ("merge_adapter", True)):
        with pytest.raises(ValidationError, match=f"{field}: torch-engine settings"):
            ServiceSettings(**{field: value})
    monkeypatch.setenv("CROSSGUARD_ENGINE", "torch")
    with pytest.raises(ValidationError, match="vllm_engine_args: set engine=vllm"):
        ServiceSettings()
    with pytest.raises(ValidationError, match="engine"):
        ServiceSettings(engine="tensorrt")
