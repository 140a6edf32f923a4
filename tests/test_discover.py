"""Local NIMs found by what they serve: a local OpenAI-compatible server whose GET /v1/models lists a catalog
model without a `serves.local` line answers for it there; models only it offers become extra entries."""
from __future__ import annotations

import pytest

from rag.catalog import Catalog
from rag.llm import HealthCache, discover
from rag.testing.fake_nim import FakeNIM, Script

NEMOTRON = "nvidia/llama-3.1-nemotron-70b-instruct"


@pytest.fixture
def local():
    nim = FakeNIM(models=(NEMOTRON, "acme/custom-7b"), default=Script(tokens=["Local ", "answer [1]."])).start()
    yield nim
    nim.stop()


def _catalog(url):
    cat = Catalog.load(environ={"HYBRID_RAG_NIM_URL": url})  # no NVIDIA_API_KEY: hosted endpoints are skipped
    assert "local" not in cat.get_model(NEMOTRON).serves  # the premise: the catalog does not say local serves it
    return cat


def test_catalog_models_a_local_server_lists_are_used_there(local):
    from rag.answer import Done, Sources, Token, answer
    from rag.types import Chunk, Hit

    cat = _catalog(local.base_url)
    live = discover(cat, HealthCache())
    assert live.get_model(NEMOTRON).serves["local"] == NEMOTRON
    assert live.extra == ["acme/custom-7b"] and live.get_model("acme/custom-7b").serves == {"local": "acme/custom-7b"}
    assert discover(cat, HealthCache()) is not cat  # rebuilt only when the listing changes: same object per listing
    hits = [Hit(Chunk(id="a#0", doc_id="a", source="a.md", text="Quarterly numbers.", start=0, end=1), score=1.0)]
    events = list(answer("Summarise the quarterly numbers.", hits, route="quality", catalog=live, health=HealthCache()))
    done = next(e for e in events if isinstance(e, Done)).meta
    assert done["model"] == NEMOTRON and done["endpoint"]["name"] == "local"
    assert "found by GET /v1/models" in done["reason"]
    assert "".join(e.text for e in events if isinstance(e, Token)) == "Local answer [1]."
    assert next(e for e in events if isinstance(e, Sources)).model == NEMOTRON
    assert local.chat_requests[-1]["json"]["model"] == NEMOTRON


def test_extra_models_appear_in_the_lists_and_answer(local, settings, embedder, monkeypatch):
    from rag.engine import Done, Engine
    from ui import chat, compare
    from ui.backend import Backend

    monkeypatch.setenv("HYBRID_RAG_NIM_URL", local.base_url)
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    backend = Backend(settings, engine=Engine(settings, embedder=embedder, health=HealthCache()))
    backend.ingest("kb", [("a.md", b"# A\n\nThe budget grew by four percent.")])
    assert ("Model: acme/custom-7b (on local)", "model:acme/custom-7b") in chat.route_choices(backend.live_catalog())
    assert "acme/custom-7b" in [c.model for c in compare.model_choices(backend)[1]]
    events = list(backend.ask("How did the budget change?", collection="kb", model="acme/custom-7b"))
    done = next(e for e in events if isinstance(e, Done)).meta
    assert done["model"] == "acme/custom-7b" and done["endpoint"]["name"] == "local"
    assert "not in the catalog" in done["reason"]


def test_when_the_server_goes_the_extra_entries_go(local):
    cat = _catalog(local.base_url)
    health = HealthCache(ttl_s=0.0)
    assert "acme/custom-7b" in [m.id for m in discover(cat, health).models]
    local.stop()
    live = discover(cat, health)
    assert live is cat and "acme/custom-7b" not in [m.id for m in live.models]
