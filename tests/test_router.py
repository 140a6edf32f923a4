"""The router: accuracy on the labelled set, false friends of OpenUSD, passage evidence, manual modes, no model
call on the hot path.

The labelled set (tests/data/router_labelled.jsonl) has a ``dev`` split (rules and exemplars are tuned on it)
and a ``heldout`` split (written before tuning, never tuned on). Rows tagged ``false_friend`` use USD-like words
outside OpenUSD (USD the currency, project stages, drone payloads, reference letters ...); rows tagged
``openusd_without_keywords`` are OpenUSD questions without the obvious API names. Print the accuracy table
(dev / held-out, rules only / full) with ``python tests/test_router.py``.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from rag.catalog import Catalog, CatalogError
from rag.router import Router, decide

LABELLED = Path(__file__).parent / "data" / "router_labelled.jsonl"
ROWS = [json.loads(line) for line in LABELLED.read_text().splitlines() if line.strip()]

# held-out accuracy measured when the false friends were added (rules only 66/69 = 0.957, full 69/69), less a margin
HELDOUT_RULES_ONLY = 0.92
HELDOUT_FULL = 0.95


def _accuracy(router, vectors=None, split=None, tag=None):
    sel = [(i, r) for i, r in enumerate(ROWS) if split in (None, r["split"]) and tag in (None, r.get("tag"))]
    wrong = []
    for i, r in sel:
        route, reason, _ = router.route(r["query"], None if vectors is None else vectors[i])
        assert "\n" not in reason and reason.startswith(route + ":")
        if route != r["route"]:
            wrong.append((r["query"], r["route"], route, reason))
    return 1 - len(wrong) / len(sel), wrong


def _to_openusd(router, vectors, split, tag="false_friend"):
    """The rows of ``split`` and ``tag`` that the router sends to openusd (with its reason)."""
    out = []
    for i, r in enumerate(ROWS):
        if r["split"] == split and r.get("tag") == tag:
            route, reason, _ = router.route(r["query"], None if vectors is None else vectors[i])
            if route == "openusd":
                out.append((r["query"], reason))
    return out


def accuracy_table(router, vectors=None) -> str:
    """Per split and group (all, original rows, each tag): correct / total, and false friends sent to openusd."""
    counts: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(ROWS):
        route = router.route(r["query"], None if vectors is None else vectors[i])[0]
        for group in ("all", r.get("tag", "original")):
            c = counts.setdefault((r["split"], group), [0, 0, 0])
            c[0] += route == r["route"]
            c[1] += 1
            c[2] += group == "false_friend" and route == "openusd"
    lines = []
    for split in ("dev", "heldout"):
        for group in ("all", "original", "false_friend", "openusd_without_keywords"):
            ok, n, _ = counts[(split, group)]
            lines.append(f"  {split:8s} {group:25s} {ok:3d}/{n:3d} = {ok / n:.3f}")
        lines.append(f"  {split:8s} {'false friends -> openusd':25s} {counts[(split, 'false_friend')][2]:3d}")
    return "\n".join(lines)


def test_labelled_set_is_big_and_balanced():
    assert len(ROWS) >= 100
    for route in ("speed", "quality", "openusd"):
        assert sum(r["route"] == route for r in ROWS) >= 30
        assert sum(r["route"] == route and r["split"] == "heldout" for r in ROWS) >= 15
    exemplars = {q for qs in Router.load(exemplar_vectors={}).spec.exemplars.values() for q in qs}
    assert not exemplars & {r["query"] for r in ROWS}, "labelled queries must not be router exemplars"
    friends = [r for r in ROWS if r.get("tag") == "false_friend"]
    assert len(friends) >= 40 and all(r["route"] != "openusd" for r in friends)
    assert sum(r["split"] == "heldout" for r in friends) >= 15
    assert sum(r.get("tag") == "openusd_without_keywords" and r["split"] == "heldout" for r in ROWS) >= 5


def test_rules_only_accuracy():
    router = Router.load(exemplar_vectors={})
    acc, wrong = _accuracy(router)
    acc_held, wrong_held = _accuracy(router, split="heldout")
    print(f"\nrouter accuracy, rules only (no query vector): {acc:.3f} on {len(ROWS)} queries "
          f"(held-out {acc_held:.3f})")
    assert acc >= 0.9, wrong
    assert acc_held >= HELDOUT_RULES_ONLY, wrong_held
    assert not _to_openusd(router, None, "heldout")


def test_router_accuracy_with_query_embeddings(embedder, tmp_path):
    """The shipped router on the labelled set, with the query vectors dense retrieval would compute."""
    router = Router.load(embedder=embedder, cache_dir=tmp_path)
    vectors = embedder.encode_queries([r["query"] for r in ROWS])
    acc, wrong = _accuracy(router, vectors)
    acc_dev, _ = _accuracy(router, vectors, "dev")
    acc_held, wrong_held = _accuracy(router, vectors, "heldout")
    print(f"\nrouter accuracy: {acc:.3f} on {len(ROWS)} queries (dev {acc_dev:.3f}, held-out {acc_held:.3f})")
    assert acc >= 0.95, wrong
    assert acc_held >= HELDOUT_FULL, wrong_held
    assert not _to_openusd(router, vectors, "heldout")
    # not "never openusd": the held-out OpenUSD questions without the obvious API names still get there
    acc_usd, wrong_usd = _accuracy(router, vectors, "heldout", "openusd_without_keywords")
    assert acc_usd >= 0.8, wrong_usd


# Retrieved passages, as the answer step would pass them (best first): OpenUSD docs and office prose.
USD_DOCS = [
    ("A layer is the atomic persistent container of scene description in OpenUSD. It holds prim specs, and a "
     "stage composes the root layer, its sublayers and every referenced layer into one scenegraph of prims."),
    ("Payloads are a composition arc like references, but they can be unloaded: Usd.Stage.Open(path, "
     "Usd.Stage.LoadNone) opens a stage with every payload unloaded, and stage.Load(path) brings one back."),
    "from pxr import Usd, UsdGeom\nstage = Usd.Stage.CreateNew('drone.usda')\nUsdGeom.Xform.Define(stage, '/World')",
]
OFFICE = [
    ("Q3 budget report. All figures were converted at the exchange rate of 1 USD = 0.92 EUR fixed by finance on "
     "1 July; travel spend was 41,200 USD against a budget of 45,000 USD."),
    ("Logistics handbook, section 4: delivery drones carry a payload of at most 2.5 kg, and the payload limit "
     "drops to 1.8 kg in winds above 30 km/h."),
    "Project stages: the pilot stage ends in March; the rollout stage needs sign-off from two layers of management.",
]


def test_passage_evidence_counts_openusd_docs_not_office_prose():
    router = Router.load(exemplar_vectors={})
    assert router.passage_evidence(USD_DOCS) == (3, 3)
    assert router.passage_evidence(OFFICE) == (0, 3)
    assert router.passage_evidence(["", "  ", *OFFICE[:1]]) == (0, 1)  # blank chunks are not evidence


def test_passages_decide_an_ambiguous_question(embedder):
    """The same question goes to openusd over OpenUSD docs and stays on speed over an office handbook."""
    q = "What happens when a payload is too large?"
    v = embedder.encode_queries([q])[0]
    for router, vec in ((Router.load(exemplar_vectors={}), None), (Router.load(embedder=embedder), v)):
        plain = router.route(q, vec)
        over_usd = router.route(q, vec, passages=USD_DOCS)
        over_office = router.route(q, vec, passages=OFFICE)
        assert plain[0] == "speed" and over_office[0] == "speed", (plain, over_office)
        assert over_usd[0] == "openusd" and "3/3 passages about OpenUSD" in over_usd[1], over_usd
        assert "not openusd: 0/3 passages about OpenUSD" in over_office[1]
        w = router.spec.passages.weight
        assert over_usd[2]["openusd"] == pytest.approx(plain[2]["openusd"] + w, abs=1e-3)
        assert over_office[2]["openusd"] == pytest.approx(plain[2]["openusd"] - w, abs=1e-3)
        assert over_usd[2]["speed"] == plain[2]["speed"]  # passages only move the openusd score


def test_the_reported_false_friends_stay_off_openusd(embedder):
    """The two questions from office documents that went to the OpenUSD code model (issue 15)."""
    full = Router.load(embedder=embedder)
    for q, over in (("What was the USD to EUR exchange rate used in the Q3 budget report?", (None, OFFICE, USD_DOCS)),
                    ("List the payload limits for the delivery drones in the logistics handbook.", (None, OFFICE))):
        # money next to USD stays off openusd even when only OpenUSD docs were retrieved; a lone "payload" is
        # weak evidence, so OpenUSD passages may tip it (that is what the passages are for)
        v = embedder.encode_queries([q])[0]
        for passages in over:
            for route, reason, _ in (Router.load(exemplar_vectors={}).route(q, passages=passages),
                                     full.route(q, v, passages=passages)):
                assert route == "speed", (q, passages, reason)
    route, reason, _ = full.route("What was the USD to EUR exchange rate used in the Q3 budget report?",
                                  passages=OFFICE)
    assert "not openusd: currency" in reason and "0/3 passages" in reason


def test_strong_openusd_evidence_wins_over_office_passages():
    router = Router.load(exemplar_vectors={})
    route, reason, _ = router.route("How do I open a stage with Usd.Stage.Open in Python?", passages=OFFICE)
    assert route == "openusd" and "OpenUSD API" in reason


def test_passage_evidence_is_bounded_and_looks_at_top_n_only():
    """A planted chunk moves the openusd score by at most 2 * weight / n; chunks past top_n are not read."""
    router = Router.load(exemplar_vectors={})
    P = router.spec.passages
    q = "What happens when a payload is too large?"
    base = router.route(q)[2]["openusd"]
    office = (OFFICE * P.top_n)[: P.top_n]
    planted = [USD_DOCS[2], *office[1:]]
    clean, dirty = router.route(q, passages=office)[2]["openusd"], router.route(q, passages=planted)[2]["openusd"]
    assert clean == pytest.approx(base - P.weight, abs=1e-3)
    assert dirty - clean == pytest.approx(2 * P.weight / P.top_n, abs=1e-3)
    assert router.route(q, passages=office + USD_DOCS * 3)[2] == router.route(q, passages=office)[2]
    assert router.route(q, passages=[])[2] == router.route(q)[2]


def test_long_repetitive_passages_route_in_linear_time():
    """The two-terms-together rule holds its first term atomically: no quadratic backtracking on a long chunk."""
    import time

    router = Router.load(exemplar_vectors={})
    t0 = time.perf_counter()
    route = router.route("What happens when a payload is too large?", passages=["layer " * 3000] * 5)[0]
    assert route == "speed" and time.perf_counter() - t0 < 2.0


def test_decide_threads_the_passages():
    cat = Catalog.load(environ={})
    router = Router.load(exemplar_vectors={})
    q = "What happens when a payload is too large?"
    assert decide(q, catalog=cat, router=router).route == "speed"
    d = decide(q, catalog=cat, router=router, passages=USD_DOCS)
    assert (d.route, d.model) == ("openusd", "nvidia/usdcode-llama3-70b-instruct") and "passages" in d.reason
    assert router.decide(q, catalog=cat, passages=OFFICE).route == "speed"

    class QuestionOnly:  # a router written before passages existed still works when none are passed
        def route(self, query, query_vector=None):
            return "quality", "quality: recorded", {}

    assert decide(q, catalog=cat, router=QuestionOnly()).route == "quality"


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


if __name__ == "__main__":  # the accuracy table: python tests/test_router.py
    from rag.embed import get_embedder

    emb = get_embedder("local")
    vecs = emb.encode_queries([r["query"] for r in ROWS])
    print("rules only (no query vector)\n" + accuracy_table(Router.load(exemplar_vectors={})))
    print("full (rules + query embedding)\n" + accuracy_table(Router.load(embedder=emb), vecs))
