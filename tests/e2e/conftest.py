import pytest

from bench.server import BentoServer


@pytest.fixture(scope="session")
def server(tiny_model, reply_adapter, tmp_path_factory):
    """The service on the tiny model with one adapter trained to answer REPLY."""
    env = {
        "CROSSGUARD_MODEL": str(tiny_model),
        "CROSSGUARD_ADAPTERS": f"refuse={reply_adapter}",
        "CROSSGUARD_MAX_REQUEST_BYTES": str(2 * 1024 * 1024),
        "CROSSGUARD_MAX_IMAGE_BYTES": str(1024 * 1024),
        "CROSSGUARD_MAX_IMAGES_PER_REQUEST": "2",
        "CROSSGUARD_MAX_TOKENS_CAP": "64",
        "CROSSGUARD_DEFAULT_MAX_TOKENS": "16",
    }
    with BentoServer(env, tmp_path_factory.mktemp("serve")) as running:
        yield running
