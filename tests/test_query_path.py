"""The query path's shortcuts take effect: sparse-only search does not embed the query (the auto router still
gets its vector from Engine), and the ONNX embedder's one-query path gives the batch path's vector."""
from __future__ import annotations

import numpy as np
import pytest
from reliability_kit import FakeEmbedder

from rag.testing.fake_nim import fake_catalog

DOCS = {
    "cats.md": "# Cats\n\nCats sleep sixteen hours a day. A cat grooms itself with its rough tongue.\n",
    "dogs.md": "# Dogs\n\nDogs need a walk twice a day. A dog wags its tail when it is happy.\n",
}


class CountingEmbedder(FakeEmbedder):
    def __init__(self):
        super().__init__()
        self.queries: list[str] = []

    def encode_queries(self, texts):
        self.queries.extend(texts)
        return super().encode_queries(texts)


@pytest.fixture
def engine(settings, fake_nim):
    from ingest.pipeline import ingest
    from rag.engine import Engine

    emb = CountingEmbedder()
    ingest("c", [(n, t.encode()) for n, t in DOCS.items()], settings=settings, embedder=emb)
    emb.queries.clear()
    return Engine(settings, embedder=emb, catalog=fake_catalog(fake_nim.base_url))


def test_sparse_only_search_does_not_embed_the_query(engine):
    res = engine.search("c", "how long do cats sleep", mode="sparse", k=2)
    assert res.hits[0].chunk.source == "cats.md"
    assert res.query_vector is None and engine.embedder.queries == []
    for mode in ("dense", "hybrid"):
        res = engine.search("c", "how long do cats sleep", mode=mode, k=2)
        assert res.query_vector is not None
    assert engine.embedder.queries == ["how long do cats sleep"] * 2


def test_sparse_only_ask_embeds_once_for_the_auto_router(engine):
    from rag.answer import Done

    events = list(engine.ask("how long do cats sleep", collection="c", mode="sparse"))
    done = next(e for e in events if isinstance(e, Done))
    # the router's vector, after retrieval (the router also embeds its own examples, once)
    assert engine.embedder.queries.count("how long do cats sleep") == 1
    assert done.meta["route"] in ("speed", "quality", "openusd")
    engine.embedder.queries.clear()
    list(engine.ask("how long do cats sleep", collection="c", mode="sparse", route="speed"))
    assert "how long do cats sleep" not in engine.embedder.queries  # no router, no embedding


def test_onnx_one_query_path_equals_the_batch_path():
    pytest.importorskip("onnxruntime")
    from rag.embed import get_embedder

    e = get_embedder("local", backend="onnx-int8")
    qs = ["vitamin D deficiency and bone density", "a", "T cells " * 200]
    one = np.stack([e.encode_queries([q])[0] for q in qs])
    # the batch path on the same one text (int8 activations are quantised per batch, so a padded batch of
    # several texts gives slightly different vectors)
    batch = np.stack([e._encode([q])[0] for q in qs])
    assert np.allclose(one, batch, atol=1e-6)
    assert e.single_query_calls >= len(qs)  # the one-query path ran
