"""The router checked against people (rag/arena.py): the router's pick stored with each Compare vote, recomputed
for older votes, agreement with the preferred model per route, the leaderboard sliced by route; and the answer
evaluation section of the Evaluate tab (ui/evaluate_answers.py) driven through its handlers on the fake NIM."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from reliability_kit import FakeEmbedder

from rag.arena import Arena, Vote, leaderboard_by_route, router_agreement, vote_picks
from rag.engine import Engine
from rag.llm import HealthCache
from rag.testing.fake_nim import Script, fake_catalog
from ui.backend import Backend

FAKE = FakeEmbedder()
ALICE = SimpleNamespace(username="alice", client=SimpleNamespace(host="127.0.0.1"), headers={})  # as Gradio passes it


def _vote(i, models, outcome, question="q", router=None):
    return Vote(i, 0.0, models, outcome, True, question, "c", {"router": router} if router else {})


def test_agreement_counts_only_votes_with_the_routers_model_and_one_winner():
    speed = {"route": "speed", "model": "m/fast"}
    quality = {"route": "quality", "model": "m/big"}
    votes = [
        _vote(1, ["m/fast", "m/big"], "A", router=speed),            # router's model won
        _vote(2, ["m/big", "m/fast"], "A", router=speed),            # it lost
        _vote(3, ["m/fast", "m/big", "m/x"], "tie", router=speed),   # no winner: a tie
        _vote(4, ["m/x", "m/y"], "A", router=speed),                 # router's model not shown
        _vote(5, ["m/big", "m/x"], "A", question="explain in depth"),   # recomputed below: quality, won
        _vote(6, ["m/fast@creative", "m/big"], "A", question=""),        # no question, nothing stored: no pick
    ]
    asked = []

    def recompute(q):
        asked.append(q)
        return dict(quality)

    picks = vote_picks(votes, recompute)
    assert asked == ["explain in depth"] and picks[5] is None
    assert [p and p["source"] for p in picks] == ["stored"] * 4 + ["recomputed", None]
    a = router_agreement(votes, picks)
    assert (a["votes"], a["router_model_shown"], a["decided"], a["agreed"], a["ties"]) == (6, 4, 3, 2, 1)
    assert a["rate"] == pytest.approx(2 / 3) and a["chance"] == pytest.approx(0.5) and a["recomputed"] == 1
    assert a["routes"]["speed"]["agreed"] == 1 and a["routes"]["speed"]["decided"] == 2
    assert a["routes"]["quality"]["rate"] == 1.0
    assert math.isnan(router_agreement([], [])["rate"])

    boards = leaderboard_by_route(votes, picks, bootstrap=0)
    assert list(boards) == ["quality", "speed"]
    assert [r["model"] for r in boards["quality"]] == ["m/big", "m/x"]
    assert sum(r["battles"] for r in boards["speed"]) == 2 * (1 + 1 + 3 + 1)


@pytest.fixture
def backend(settings, fake_nim):
    fake_nim.default = Script(tokens=["Cats sleep sixteen hours a day [1]."])
    b = Backend(settings, engine=Engine(settings, embedder=FAKE, catalog=fake_catalog(fake_nim.base_url),
                                        health=HealthCache()))
    b.ingest("kb", [("cats.md", b"# Cats\n\nCats sleep sixteen hours a day."),
                    ("dogs.txt", b"Dogs like long walks in the park.")])
    b.state.add_user("alice", "alice-password", "reader")
    b.state.grant("kb", "alice", as_="reader")
    return b


def test_compare_stores_the_routers_pick_with_the_vote(backend):
    from ui import compare

    opts = [o for o in compare.contestants(backend.live_catalog()) if o.key in ("fake/model", "fake/big")]
    outs = list(compare.run_compare(backend, "How long do cats sleep?", "kb", "hybrid", 3,
                                    [o.key for o in opts], False, 32, opts, request=ALICE))
    state = outs[-1][-1]
    assert state["router"]["route"] in ("speed", "quality", "openusd")
    compare.vote(backend, "A", state, opts, request=ALICE)
    vote = backend.arena.votes()[0]
    stored = vote.meta["router"]
    assert vote.voter == "alice"
    res = backend.search("kb", "How long do cats sleep?", mode="hybrid", k=3)
    route, _, _ = backend.engine.router.route("How long do cats sleep?", res.query_vector,
                                              passages=[h.chunk.text for h in res.hits])
    assert stored["route"] == route and stored["model"] == backend.catalog.model_for_route(route).id


def test_answer_section_runs_saves_and_shows_the_arena_and_router(backend, tmp_path):
    from ui import evaluate_answers as ea

    golden = tmp_path / "g.jsonl"
    golden.write_text('{"id": "c1", "question": "How long do cats sleep?", "expected_docs": ["cats.md"], '
                      '"reference": "Cats sleep sixteen hours a day."}\n'
                      '{"id": "u1", "question": "What does a moon ticket cost?", "answerable": false}\n')
    outs = list(ea.run_live(backend, ALICE, str(golden), "kb", ["fake/model", "fake/big"], "none", 32, 0,
                            progress=lambda *a, **k: None))
    msg, table, chart, judge_msg, judge_table, question, current, exports, side, saved = outs[-1]
    assert "Run " in msg and [r[0] for r in table] == ["fake/model", "fake/big"]
    assert table[0][3] == 1.0                                   # citation validity
    assert set(chart["model"]) == {"fake/model", "fake/big"} and chart["value"].between(0, 1).all()
    assert "no judge ran" in judge_msg and judge_table == []
    info, rows = ea.question_view(current, "c1")
    assert "How long do cats sleep?" in info and "cats.md" in info and [r[0] for r in rows] == ["fake/model",
                                                                                                  "fake/big"]
    assert rows[0][1] == "Cats sleep sixteen hours a day [1]." and rows[0][6] == 1.0
    assert open(exports[0]).read().startswith("id,question,answerable,model")
    assert side == []                                            # no votes yet

    # hostile text in the golden set is escaped in the one HTML view
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "question": "<script>alert(1)</script> cats?"}\n')
    out = list(ea.run_live(backend, ALICE, str(bad), "kb", ["fake/model"], "none", 32, 0, progress=lambda *a, **k: None))
    info, _ = ea.question_view(out[-1][6], "x")
    assert "<script>" not in info and "&lt;script&gt;" in info

    backend.arena.record_vote(["fake/big", "fake/model"], "A", question="How long do cats sleep?",
                              meta={"router": {"route": "quality", "model": "fake/big"}})
    backend.arena.record_vote(["fake/model", "fake/big"], "B", question="Compare cats and dogs in depth")
    note, agree, by_route = ea.router_views(backend)
    assert "recomputed from the question for 1 older" in note
    assert agree[0][:5] == ["all", 2, 2, 2, agree[0][4]]
    assert {r[0] for r in by_route} <= {"speed", "quality", "openusd"} and by_route
    side = ea.run_views(backend, ALICE, saved["value"])[-1]            # the saved run, opened again
    assert sorted(r[0] for r in side) == ["fake/big", "fake/model"] and all(r[3] == 2 for r in side)


def test_answer_section_refuses_bad_input(backend, tmp_path):
    from ui import evaluate_answers as ea

    def first(*args):
        return list(ea.run_live(backend, ALICE, *args, progress=lambda *a, **k: None))[-1][0]

    assert "Pick the collection" in first(None, "nope", ["fake/model"], "none", 32, 0)
    assert "Pick 1 to 4 models" in first(None, "kb", [], "none", 32, 0)
    assert "never used as a judge" in first(None, "kb", ["fake/model"], "smollm2-135m-instruct", 32, 0)
    bad = tmp_path / "b.jsonl"
    bad.write_text("{oops\n")
    assert "line 1 is not JSON" in first(str(bad), "kb", ["fake/model"], "none", 32, 0)
    assert "Max tokens" in first(None, "kb", ["fake/model"], "none", 5, 0)
    assert Arena.for_data_dir(backend.settings.data_dir).count() == 0
