import csv
import io
import math
import threading

import numpy as np
import pytest

from rag.arena import (
    Arena,
    ArenaError,
    Vote,
    bradley_terry,
    leaderboard,
    leaderboard_csv,
    pairwise,
    to_elo,
)


def _v(models, outcome, i=0):
    return Vote(i, 0.0, list(models), outcome, True)


def test_votes_persist_in_sqlite_in_the_data_dir(data_dir):
    arena = Arena.for_data_dir(data_dir)
    vid = arena.record_vote(["m1", "m2"], "A", blind=True, question="q?", collection="c", meta={"k": 3})
    assert (data_dir / "state.sqlite").is_file()   # the state database (rag.state), no arena.sqlite any more
    again = Arena.for_data_dir(data_dir)  # a new process sees the same votes
    [v] = again.votes()
    assert (v.id, v.models, v.outcome, v.blind, v.question, v.collection, v.meta) == \
        (vid, ["m1", "m2"], "A", True, "q?", "c", {"k": 3})


@pytest.mark.parametrize("models,outcome", [
    (["a"], "A"), (["a", "a"], "A"), (["a", "b"], "C"), (["a", "b"], "maybe"), (["a", "b", "c", "d", "e"], "A")])
def test_bad_votes_are_refused(data_dir, models, outcome):
    with pytest.raises(ArenaError):
        Arena.for_data_dir(data_dir).record_vote(models, outcome)


def test_pairwise_expansion():
    assert pairwise((["a", "b"], "B")) == [("b", "a", 1.0)]
    assert pairwise((["a", "b", "c"], "A")) == [("a", "b", 1.0), ("a", "c", 1.0)]
    assert sorted(pairwise((["a", "b", "c"], "bad"))) == [("a", "b", .5), ("a", "c", .5), ("b", "c", .5)]


def test_bradley_terry_recovers_known_strengths():
    rng = np.random.default_rng(1)
    true = np.array([0.0, 0.7, -0.7])
    n = len(true)
    wins = np.zeros((n, n))
    games = np.zeros((n, n))
    for _ in range(6000):
        i, j = rng.choice(n, 2, replace=False)
        p = 1 / (1 + np.exp(-(true[i] - true[j])))
        s = float(rng.random() < p)
        wins[i, j] += s
        wins[j, i] += 1 - s
        games[i, j] += 1
        games[j, i] += 1
    est = bradley_terry(wins, games, l2=0.0)
    assert np.allclose(est, true - true.mean(), atol=0.1)


def test_bradley_terry_matches_the_closed_form_for_two_models():
    # two models, a wins 30 of 40: log-odds = log(30/10)
    wins = np.array([[0, 30], [10, 0]], float)
    games = np.array([[0, 40], [40, 0]], float)
    t = bradley_terry(wins, games, l2=0.0)
    assert t[0] - t[1] == pytest.approx(math.log(3), rel=1e-6)


def test_leaderboard_orders_counts_and_brackets():
    votes = [_v(["good", "bad"], "A", i) for i in range(8)] + [_v(["good", "bad"], "B", 8),
                                                             _v(["bad", "good"], "tie", 9),
                                                             _v(["good", "bad"], "bad", 10)]
    rows = leaderboard(votes, bootstrap=100, seed=3)
    assert [r["model"] for r in rows] == ["good", "bad"]
    good, bad = rows
    assert (good["battles"], good["wins"], good["ties"], good["losses"], good["both_bad"]) == (11, 8, 2, 1, 1)
    assert (bad["wins"], bad["losses"]) == (1, 8)
    assert good["win_rate"] == pytest.approx(9 / 11)
    assert good["score"] > 1000 > bad["score"]
    assert good["score"] + bad["score"] == pytest.approx(2000)
    for r in rows:
        assert r["ci_low"] <= r["score"] <= r["ci_high"]


def test_winner_takes_all_stays_finite():
    rows = leaderboard([_v(["x", "y"], "A")] * 5, bootstrap=20)
    assert all(math.isfinite(r["score"]) for r in rows)


def test_empty_leaderboard():
    assert leaderboard([]) == []


def test_csv_export_round_trips():
    rows = leaderboard([_v(["x", "y", "z"], "C"), _v(["x", "y"], "A")], bootstrap=10)
    parsed = list(csv.DictReader(io.StringIO(leaderboard_csv(rows))))
    assert [p["model"] for p in parsed] == [r["model"] for r in rows]
    assert parsed[0]["rank"] == "1" and float(parsed[0]["score"]) == pytest.approx(rows[0]["score"], abs=0.05)


def test_concurrent_votes_are_all_kept(data_dir):
    arena = Arena.for_data_dir(data_dir)

    def vote():
        for _ in range(20):
            arena.record_vote(["a", "b"], "A")

    threads = [threading.Thread(target=vote) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert arena.count() == 80


def test_elo_scale():
    assert to_elo(np.array([0.0]))[0] == 1000
    assert to_elo(np.array([math.log(10)]))[0] == pytest.approx(1400)
