"""The router: accuracy on the labelled set, manual modes, no model call on the hot path."""
import json
from pathlib import Path

import numpy as np
import pytest

from rag.catalog import Catalog, CatalogError
from rag.router import Router, decide

LABELLED = Path(__file__).parent / "data" / "router_labelled.jsonl"
ROWS = [json.loads(line) for line in LABELLED.read_text().splitlines() if line.strip()]


def _accuracy(router, vectors=None, split=None):
    sel = [(i, r) for i, r in enumerate(ROWS) if split in (None, r["split"])]
    wrong = []
    for i, r in sel:
        route, reason, _ = router.route(r["query"], None if vectors is None else vectors[i])
        assert "\n" not in reason and reason.startswith(route + ":")
        if route != r["route"]:
            wrong.append((r["query"], r["route"], route, reason))
    return 1 - len(wrong) / len(sel), wrong


def test_labelled_set_is_big_and_balanced():
    assert len(ROWS) >= 100
    for route in ("speed", "quality", "openusd"):
        assert sum(r["route"] == route for r in ROWS) >= 30
    exemplars = {q for qs in Router.load(exemplar_vectors={}).spec.exemplars.values() for q in qs}
    assert not exemplars & {r["query"] for r in ROWS}, "labelled queries must not be router exemplars"


def test_rules_only_accuracy():
    acc, wrong = _accuracy(Router.load(exemplar_vectors={}))
    print(f"\nrouter accuracy, rules only (no query vector): {acc:.3f} on {len(ROWS)} queries")
    assert acc >= 0.85, wrong


def test_router_accuracy_with_query_embeddings(embedder, tmp_path):
    """The shipped router on the labelled set, with the query vectors dense retrieval would compute."""
    router = Router.load(embedder=embedder, cache_dir=tmp_path)
    vectors = embedder.encode_queries([r["query"] for r in ROWS])
    acc, wrong = _accuracy(router, vectors)
    acc_dev, _ = _accuracy(router, vectors, "dev")
    acc_held, _ = _accuracy(router, vectors, "heldout")
    print(f"\nrouter accuracy: {acc:.3f} on {len(ROWS)} queries (dev {acc_dev:.3f}, held-out {acc_held:.3f})")
    assert acc >= 0.9, wrong
    assert acc_held >= 0.9, wrong


def test_no_model_call_on_the_hot_path(embedder, tmp_path):
    router = Router.load(embedder=embedder, cache_dir=tmp_path)
    router.warm()
    assert list(tmp_path.glob("router-exemplars-*.npz"))
    q = embedder.encode_queries(["How do I open a USD stage?"])[0]

    class Boom:
        model_id = embedder.model_id

        def encode_queries(self, texts):
            raise AssertionError("the router embedded something on the hot path")

    router._embedder = Boom()
    assert router.route("How do I open a USD stage?", q)[0] == "openusd"
    # a fresh router reads the disk cache instead of embedding the exemplars again
    again = Router.load(embedder=Boom(), cache_dir=tmp_path)
    assert again.route("How do I open a USD stage?", q)[0] == "openusd"


def test_foreign_query_vector_falls_back_to_rules():
    router = Router.load(exemplar_vectors={r: np.eye(3, 384, dtype=np.float32) for r in ("speed", "quality", "openusd")})
    route, reason, _ = router.route("What is a prim in UsdGeom?", np.ones(1024, dtype=np.float32))
    assert route == "openusd" and "rules only" in reason


def test_manual_modes_skip_the_router():
    cat = Catalog.load(environ={})
    d = decide("anything", catalog=cat, route="openusd")
    assert (d.mode, d.model) == ("route", "nvidia/usdcode-llama3-70b-instruct")
    d = decide("anything", catalog=cat, model="nvidia/usdcode-llama-3.1-70b-instruct")
    assert (d.mode, d.route, d.model) == ("model", "openusd", "nvidia/usdcode-llama3-70b-instruct")
    d = decide("anything", catalog=cat, model="google/gemma-2-2b-it")
    assert d.route == "manual" and "chosen by the user" in d.reason
    with pytest.raises(CatalogError):
        decide("anything", catalog=cat, route="turbo")
    d = decide("Compare A and B in depth, step by step", catalog=cat, router=Router.load(exemplar_vectors={}))
    assert (d.mode, d.route, d.model) == ("auto", "quality", "nvidia/llama-3.1-nemotron-70b-instruct")
