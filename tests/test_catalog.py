"""The model catalog: shipped contents, validation, sampling params, no network at construction."""
import socket

import pytest

from rag.catalog import (
    Catalog,
    CatalogError,
    ParamsError,
    SamplingParams,
    UnknownModelError,
    validate_params,
)
from rag.config import ConfigError

# Every chat model in /work/shared/model-cards (000: nine API-catalog models; 001/004: Nemotron-70B;
# 002: Nemotron-4-340B; 003: an ONNX build of Mistral-NeMo-12B, listed as an alias).
CARD_MODELS = [
    "nvidia/llama-3.1-nemotron-70b-instruct", "nvidia/mistral-nemo-minitron-8b-8k-instruct",
    "meta/llama-3.2-3b-instruct", "google/gemma-2-2b-it", "nvidia/usdcode-llama3-70b-instruct",
    "nv-mistralai/mistral-nemo-12b-instruct", "microsoft/phi-3-small-8k-instruct",
    "mistralai/mixtral-8x22b-instruct-v0.1", "meta/codellama-70b", "nvidia/nemotron-4-340b-instruct",
]


@pytest.fixture
def catalog():
    return Catalog.load(environ={})


def test_routes_point_at_the_issue_models(catalog):
    assert catalog.model_for_route("speed").id == "nvidia/mistral-nemo-minitron-8b-8k-instruct"
    assert catalog.model_for_route("quality").id == "nvidia/llama-3.1-nemotron-70b-instruct"
    assert catalog.model_for_route("openusd").id == "nvidia/usdcode-llama3-70b-instruct"


def test_every_card_model_is_in_the_catalog(catalog):
    ids = {m.id for m in catalog.models}
    assert set(CARD_MODELS) <= ids
    for m in catalog.models:
        assert m.context >= 2048 and m.name and m.serves
    assert catalog.get_model("nvidia/usdcode-llama-3.1-70b-instruct").id == "nvidia/usdcode-llama3-70b-instruct"
    assert catalog.get_model("nvidia/usdcode-llama3-70b-instruct").serves["hosted"] == "nvidia/usdcode-llama-3.1-70b-instruct"
    assert catalog.get_model("nvidia/mistral-nemo-minitron-8b-8k-instruct").context == 8192


def test_endpoints_of_three_kinds_plus_embedded(catalog):
    eps = catalog.endpoints
    assert eps["hosted"].kind == "nvidia_hosted"
    assert eps["hosted"].base_url == "https://integrate.api.nvidia.com/v1" and eps["hosted"].api_key_env == "NVIDIA_API_KEY"
    assert eps["local"].kind == "local_nim" and eps["local"].resolved_base_url({}) == "http://localhost:8000/v1"
    assert eps["local"].resolved_base_url({"HYBRID_RAG_NIM_URL": "http://gpu:9000/v1/"}) == "http://gpu:9000/v1"
    assert eps["deepinfra"].kind == "openai_compatible" and eps["deepinfra"].api_key_env == "DEEPINFRA_TOKEN"
    assert catalog.fallback_order[:2] == ["local", "hosted"] and catalog.fallback_order[-1] == "embedded"
    assert catalog.embedded_model().embedded


def test_fallback_order_is_configurable():
    c = Catalog.load(environ={"HYBRID_RAG__MODELS__FALLBACK_ORDER": "hosted, embedded"})
    assert c.fallback_order == ["hosted", "embedded"]
    assert c.endpoints_for(c.model_for_route("speed")) == ["hosted"]
    with pytest.raises(ConfigError, match="unknown endpoint 'cloud'.*|HYBRID_RAG__MODELS__FALLBACK_ORDER") as e:
        Catalog.load(environ={"HYBRID_RAG__MODELS__FALLBACK_ORDER": "cloud"})
    assert "unknown endpoint 'cloud'" in str(e.value) and "HYBRID_RAG__MODELS__FALLBACK_ORDER" in str(e.value)


def test_unknown_model_lists_the_known_ones(catalog):
    with pytest.raises(UnknownModelError, match="Known models: .*minitron"):
        catalog.get_model("gpt-17")


def test_invalid_catalogs_are_rejected():
    base = {"fallback_order": ["e"], "routes": {"speed": "s", "quality": "s", "openusd": "s"},
            "endpoints": {"e": {"kind": "embedded"}},
            "models": [{"id": "s", "name": "S", "context": 2048, "embedded": True, "serves": {"e": "f.gguf"}}]}
    Catalog.from_dict(base)
    bad = {**base, "routes": {"speed": "nope", "quality": "s", "openusd": "s"}}
    with pytest.raises(CatalogError, match="unknown model 'nope'"):
        Catalog.from_dict(bad)
    bad = {**base, "models": [{**base["models"][0], "serves": {"x": "f"}}]}
    with pytest.raises(CatalogError, match="unknown endpoint 'x'"):
        Catalog.from_dict(bad)
    bad = {**base, "extra": 1}
    with pytest.raises(CatalogError, match="extra"):
        Catalog.from_dict(bad)


@pytest.mark.parametrize("field,value", [("temperature", 2.5), ("temperature", -0.1), ("top_p", 0), ("top_p", 1.5),
                                          ("max_tokens", 0), ("seed", -1), ("frequency_penalty", 3),
                                          ("presence_penalty", -2.5), ("stop", [str(i) for i in range(17)])])
def test_out_of_range_params_name_the_field(field, value):
    with pytest.raises(ParamsError, match=f"{field}"):
        validate_params({field: value})


def test_params_unknown_field_and_merge():
    with pytest.raises(ParamsError, match="unknown sampling parameter 'temprature'.*allowed: temperature"):
        validate_params({"temprature": 0.1})
    p = validate_params({"stop": "<extra_id_1>", "seed": 7, "temperature": 0})
    assert p.stop == ["<extra_id_1>"]
    merged = SamplingParams(temperature=0.5, top_p=1.0, max_tokens=1024).merged(p)
    assert merged.request_fields() == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 1024,
                                       "stop": ["<extra_id_1>"], "seed": 7}


def test_no_network_at_construction(monkeypatch, catalog):
    """Building clients (ChatNVIDIA included, for a model its hosted table lacks) opens no socket."""
    from rag.llm import make_client

    def refuse(*a, **k):
        raise AssertionError("network call at construction time")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    c = Catalog.load(environ={"NVIDIA_API_KEY": "nvapi-test"})
    for m in c.models:
        for ep in m.serves:
            client = make_client(c, ep, m)
            if client.kind == "nim":
                client._chat("nvapi-test")  # ChatNVIDIA itself
