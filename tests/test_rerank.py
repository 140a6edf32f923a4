"""The optional rerank stage (rag/rerank.py) through NVIDIARerank's real HTTP client against the fake NIM's
``/v1/ranking`` on loopback: the reorder, the scores in each hit's explanation (engine, API, CLI), and the
fallbacks to the fused order (timeout, HTTP error, a malformed ranking, no key) with the reason in the metadata."""
from __future__ import annotations

import pytest
from reliability_kit import FakeEmbedder

from rag.engine import Engine
from rag.testing.fake_nim import RankScript, Script, closed_port_url, fake_catalog

FAKE = FakeEmbedder()
DOCS = {f"doc{i}.md": f"# Doc {i}\n\nPlain filler text number {i} about nothing in particular." for i in range(6)}
DOCS["herons.md"] = "# Herons\n\nHerons hunt fish in shallow water at dawn; the heron stands very still."
QUERY = "where do herons hunt fish at dawn in shallow water"


@pytest.fixture
def engine(settings, fake_nim):
    from ingest.pipeline import ingest

    ingest("c", [(n, t.encode()) for n, t in DOCS.items()], settings=settings, embedder=FAKE)
    settings.retrieval.mode = "dense"        # the byte-bigram embedder ranks herons.md somewhere, not surely first
    settings.rerank.enabled = True
    settings.rerank.base_url = fake_nim.base_url
    settings.rerank.top_n = 7
    settings.rerank.timeout_s = 10.0         # generous: a loaded machine is slow (the timeout case sets 1 s)
    return Engine(settings, embedder=FAKE, catalog=fake_catalog(fake_nim.base_url))


def _fused(engine, k=7):
    engine.settings.rerank.enabled = False
    try:
        return engine.search("c", QUERY, k=k).hits
    finally:
        engine.settings.rerank.enabled = True


def test_rerank_reorders_the_fused_hits_and_its_scores_join_the_explanation(engine, fake_nim):
    fused = _fused(engine)
    hits = engine.search("c", QUERY, k=3)
    req = fake_nim.rank_requests[-1]
    assert req["path"] == "/v1/ranking" and req["json"]["model"] == "nvidia/llama-3.2-nv-rerankqa-1b-v2"
    assert req["json"]["query"] == {"text": QUERY}
    assert [p["text"] for p in req["json"]["passages"]] == [h.chunk.text for h in fused]   # the fused top-N
    assert len(hits.hits) == 3 and hits.hits[0].chunk.source == "herons.md"
    assert [h.rerank_rank for h in hits.hits] == [1, 2, 3]
    assert hits.hits[0].rerank_score > hits.hits[1].rerank_score
    top = next(h for h in fused if h.chunk.source == "herons.md")
    assert (hits.hits[0].fused_rank, hits.hits[0].score) == (top.fused_rank, top.score)   # fused facts kept
    assert "rerank_ms" in hits.timings


def test_answers_are_built_from_the_reranked_order_and_say_so(engine, fake_nim):
    from rag.engine import Done, Sources

    fake_nim.default = Script(tokens=["Herons hunt at dawn [1]."])
    events = list(engine.ask(QUERY, collection="c", route="speed", k=2))
    sent = next(e for e in events if isinstance(e, Sources)).hits
    assert sent[0].chunk.source == "herons.md" and sent[0].rerank_rank == 1
    assert "Herons hunt fish" in fake_nim.chat_requests[-1]["json"]["messages"][-1]["content"].split("[2]")[0]
    meta = next(e for e in events if isinstance(e, Done)).meta
    assert meta["rerank"]["applied"] and meta["rerank"]["reason"] is None and meta["rerank"]["reranked"] == 7
    assert meta["rerank"]["where"] == "local"


@pytest.mark.parametrize("script, why", [
    (RankScript(delay_s=2.5), "no answer within 1 s (rerank.timeout_s)"),
    (RankScript(status=500), "HTTP 500"),
    (RankScript(body={"rankings": [{"index": 0, "logit": 1.0}]}), "ranked 1 passages of 7"),
    (RankScript(body={"rankings": [{"index": 99, "logit": 1.0}]}), "not a ranking (AssertionError)"),
    (RankScript(body={"results": []}), "not a ranking (KeyError)"),
])
def test_a_failed_rerank_keeps_the_fused_order_with_the_reason(engine, fake_nim, script, why):
    from rag import metrics
    from rag.engine import Done, Sources

    fused = _fused(engine, k=2)
    fake_nim.ranking = script
    if script.delay_s:
        engine.settings.rerank.timeout_s = 1.0
    before = metrics.FALLBACKS.labels("rerank", "timeout" if "within" in why else "error")._value.get()
    events = list(engine.ask(QUERY, collection="c", route="speed", k=2))
    sent = next(e for e in events if isinstance(e, Sources)).hits
    assert [h.chunk.id for h in sent] == [h.chunk.id for h in fused] and all(h.rerank_rank is None for h in sent)
    info = next(e for e in events if isinstance(e, Done)).meta["rerank"]
    assert not info["applied"] and info["reason"].startswith("rerank skipped, fused order kept: ") and why in info["reason"]
    assert metrics.FALLBACKS.labels("rerank", "timeout" if "within" in why else "error")._value.get() == before + 1


def test_unreachable_or_keyless_rerank_keeps_the_fused_order(engine, monkeypatch):
    engine.settings.rerank.base_url = closed_port_url()
    hits = engine.search("c", QUERY, k=2).hits
    assert [h.rerank_rank for h in hits] == [None, None] and len(hits) == 2
    from rag.rerank import Reranker

    engine.settings.rerank.base_url = None   # hosted: the key is needed and is not set
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    _, info = Reranker.from_settings(engine.settings).rerank(QUERY, hits)
    assert info["reason"] == ("rerank skipped, fused order kept: NVIDIA_API_KEY is not set: set it for NVIDIA's "
                              "hosted rerank API, or point rerank.base_url at a local rerank NIM")


def test_rerank_is_off_by_default(settings, fake_nim):
    from ingest.pipeline import ingest
    from rag.config import load_settings

    assert load_settings().rerank.enabled is False
    ingest("c", [(n, t.encode()) for n, t in DOCS.items()], settings=settings, embedder=FAKE)
    settings.rerank.base_url = fake_nim.base_url
    hits = Engine(settings, embedder=FAKE).search("c", QUERY).hits
    assert fake_nim.rank_requests == [] and all(h.rerank_rank is None for h in hits)


def test_the_api_and_the_cli_show_the_rerank_scores(engine, fake_nim):
    from api.documents import hit_fields

    hits = engine.search("c", QUERY, k=2).hits
    f = hit_fields(hits[0])
    assert f["rerank_rank"] == 1 and f["rerank_score"] == hits[0].rerank_score and f["fused_rank"]
