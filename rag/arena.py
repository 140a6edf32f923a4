"""Model arena: votes from side-by-side comparisons, stored in the state database, and a leaderboard.

A vote records the models shown (in column order A, B, C, D) and the outcome:

- ``"A"`` .. ``"D"``: that column was best. For the pairwise statistics it beat every other column.
- ``"tie"``: all columns equally good; every pair counts as a tie.
- ``"bad"``: all columns bad; every pair counts as a tie (as in Chatbot Arena), and it is counted
  separately so the leaderboard can show it.

The leaderboard gives, per model, battles, wins, ties, losses, the win rate (ties count half) and a
Bradley-Terry score on the Elo scale (1000 = average, +400 = 10:1 odds) with a bootstrap confidence
interval over votes. The router is checked against the votes too: :func:`router_agreement` says how often the
model the auto router would have picked for the vote's question was the one people preferred, and
:func:`leaderboard_by_route` slices the leaderboard by that route (the pick is stored with each vote since issue
13 as ``meta["router"]``; older votes get it recomputed from their question).

Votes live in the state database (:mod:`rag.state`, table ``votes``), with the voter's name and the collection the
question went to, so the leaderboard can be filtered by collection. The ``arena.sqlite`` file of earlier versions
is imported once (:func:`import_arena_sqlite`, run when the state opens) and renamed ``arena.sqlite.imported``.

Everything is plain numpy; the fit is a regularised Newton solve on the
aggregated pairwise counts, so a bootstrap of a few hundred resamples takes milliseconds.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import HybridRagError

OUTCOMES = ("A", "B", "C", "D", "tie", "bad")
LABELS = "ABCD"
ELO_BASE = 1000.0
ELO_SCALE = 400.0 / math.log(10.0)
DB_NAME = "arena.sqlite"
PRIOR_L2 = 0.5          # Bradley-Terry prior: one vote moves two models about ±90 Elo, not ±340

class ArenaError(HybridRagError, ValueError):
    pass


@dataclass
class Vote:
    id: int
    ts: float
    models: list[str]
    outcome: str
    blind: bool
    question: str = ""
    collection: str = ""
    meta: dict = field(default_factory=dict)
    voter: str | None = None


def arena_path(data_dir: str | Path) -> Path:
    """Where earlier versions kept the votes (imported into the state database once)."""
    return Path(data_dir) / DB_NAME


def validate_vote(models: list[str], outcome: str) -> None:
    if not 2 <= len(models) <= len(LABELS):
        raise ArenaError(f"A vote needs 2 to {len(LABELS)} models, got {len(models)}.")
    if len(set(models)) != len(models):
        raise ArenaError("A vote compares different models; the same model appears twice.")
    if outcome not in OUTCOMES:
        raise ArenaError(f"Unknown outcome {outcome!r}: use one of {', '.join(OUTCOMES)}.")
    if outcome in LABELS and LABELS.index(outcome) >= len(models):
        raise ArenaError(f"Outcome {outcome!r} names a column that was not shown ({len(models)} models).")


class Arena:
    """The votes, in the state database's ``votes`` table; safe to share between threads and processes."""

    def __init__(self, state):
        if isinstance(state, (str, Path)):   # the old Arena(<data_dir>/arena.sqlite): that data directory's state
            from .state import open_state_at

            state = open_state_at(Path(state).parent)
        self.state = state

    @classmethod
    def for_state(cls, state) -> "Arena":
        return cls(state)

    @classmethod
    def for_data_dir(cls, data_dir: str | Path) -> "Arena":
        """The arena of the state database that a data directory uses (``$HYBRID_RAG_DATABASE_URL``, else
        ``<data_dir>/state.sqlite``)."""
        from .state import open_state_at

        return cls(open_state_at(data_dir))

    def record_vote(self, models: list[str], outcome: str, *, blind: bool = True, question: str = "",
                    collection: str = "", meta: dict | None = None, voter: str | None = None) -> int:
        """Store one vote (``voter``: the signed-in user's name); returns its id."""
        from sqlalchemy import insert

        from .state import models as m

        models = [str(m_) for m_ in models]
        validate_vote(models, outcome)
        voter = getattr(voter, "name", voter)
        with self.state._tx(write=True) as c:
            return int(c.execute(insert(m.votes).values(
                ts=time.time(), models=json.dumps(models), outcome=outcome, blind=bool(blind),
                question=str(question)[:4000], collection=str(collection or "")[:200],
                meta=json.dumps(meta or {}, default=str), voter=str(voter)[:64] if voter else None,
            )).inserted_primary_key[0])

    record = record_vote

    def _query(self, collection: str | None = None, voter: str | None = None):
        from sqlalchemy import select

        from .state import models as m

        q = select(m.votes).order_by(m.votes.c.id)
        if collection is not None:
            q = q.where(m.votes.c.collection == str(collection))
        if voter is not None:
            q = q.where(m.votes.c.voter == str(getattr(voter, "name", voter)))
        return q

    def votes(self, collection: str | None = None, voter: str | None = None) -> list[Vote]:
        """Every vote, oldest first; only those on ``collection`` / by ``voter`` when given."""
        with self.state._tx() as c:
            rows = c.execute(self._query(collection, voter)).all()
        return [Vote(int(r.id), r.ts, json.loads(r.models), r.outcome, bool(r.blind), r.question, r.collection,
                     json.loads(r.meta or "{}"), r.voter) for r in rows]

    def count(self, collection: str | None = None) -> int:
        from sqlalchemy import func, select

        from .state import models as m

        q = select(func.count()).select_from(m.votes)
        if collection is not None:
            q = q.where(m.votes.c.collection == str(collection))
        with self.state._tx() as c:
            return int(c.execute(q).scalar_one())

    def collections(self) -> list[str]:
        """The collections that have votes, sorted (for a leaderboard filter)."""
        from sqlalchemy import select

        from .state import models as m

        with self.state._tx() as c:
            return sorted(r[0] for r in c.execute(select(m.votes.c.collection).distinct()) if r[0])

    def leaderboard(self, *, bootstrap: int = 200, seed: int = 0, collection: str | None = None) -> list[dict]:
        """The leaderboard over every vote, or over the votes on ``collection``."""
        return leaderboard(self.votes(collection=collection), bootstrap=bootstrap, seed=seed)


def import_arena_sqlite(state, data_dir: str | Path) -> int:
    """Copy the votes of ``<data_dir>/arena.sqlite`` (earlier versions) into the state database once, then rename
    the file ``arena.sqlite.imported``; returns how many votes came in (0 when there is no file)."""
    import sqlite3

    from sqlalchemy import insert, select
    from sqlalchemy.exc import IntegrityError

    from .state import models as m

    path = arena_path(data_dir)
    if not path.is_file():
        return 0
    marker = f"imported:arena:{path.resolve()}"
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute("SELECT ts, models, outcome, blind, question, collection, meta FROM votes ORDER BY id").fetchall()
    except sqlite3.Error as e:
        raise ArenaError(f"The old votes file {path} cannot be read ({e}): move it away (the arena starts empty) "
                         "or restore it from a backup.") from None
    finally:
        con.close()
    n = 0
    try:
        with state._tx(write=True) as c:
            if c.execute(select(m.meta_kv.c.key).where(m.meta_kv.c.key == marker)).first() is None:
                c.execute(insert(m.meta_kv).values(key=marker, value=json.dumps({"votes": len(rows), "ts": time.time()})))
                if rows:
                    c.execute(insert(m.votes), [
                        {"ts": float(r[0]), "models": r[1], "outcome": r[2], "blind": bool(r[3]), "question": r[4] or "",
                         "collection": r[5] or "", "meta": r[6] or "{}", "voter": None} for r in rows])
                n = len(rows)
    except IntegrityError:   # another process imported it at the same moment
        n = 0
    try:
        path.rename(path.with_name(DB_NAME + ".imported"))
    except FileNotFoundError:
        pass
    if n:
        state.audit("system", "arena.import", detail=f"{n} votes from {path}")
    return n


# ------------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------------

def pairwise(vote: Vote | tuple[list[str], str]) -> list[tuple[str, str, float]]:
    """The pairwise battles in one vote: ``(model_a, model_b, score_of_a)`` with 1 win, 0.5 tie, 0 loss."""
    models, outcome = (vote.models, vote.outcome) if isinstance(vote, Vote) else vote
    if outcome in ("tie", "bad"):
        return [(models[i], models[j], 0.5) for i in range(len(models)) for j in range(i + 1, len(models))]
    w = models[LABELS.index(outcome)]
    return [(w, m, 1.0) for m in models if m != w]


def _aggregate(votes: list[Vote], index: dict[str, int], weights: np.ndarray | None = None):
    """Per-vote-weighted matrices: wins[i, j] = score of i against j, games[i, j] = battles of i and j."""
    n = len(index)
    wins = np.zeros((n, n))
    games = np.zeros((n, n))
    for v, vote in enumerate(votes):
        w = 1.0 if weights is None else weights[v]
        if w == 0:
            continue
        for a, b, s in pairwise(vote):
            i, j = index[a], index[b]
            wins[i, j] += w * s
            wins[j, i] += w * (1 - s)
            games[i, j] += w
            games[j, i] += w
    return wins, games


def bradley_terry(wins: np.ndarray, games: np.ndarray, *, l2: float = PRIOR_L2, iters: int = 50) -> np.ndarray:
    """Bradley-Terry log-strengths (mean 0) from pairwise counts, ties counted as half a win each way.

    Maximises ``sum_ij wins_ij * log sigmoid(t_i - t_j) - l2/2 |t|^2`` by Newton's method. The L2 term is a
    Gaussian prior (sd ``1/sqrt(l2)`` in log-odds) that keeps a model that won every battle finite and keeps
    a handful of votes from producing extreme scores; with many votes it washes out.
    """
    n = len(wins)
    theta = np.zeros(n)
    if n == 0:
        return theta
    for _ in range(iters):
        d = theta[:, None] - theta[None, :]
        p = 1.0 / (1.0 + np.exp(-d))  # P(i beats j)
        grad = (wins - games * p).sum(axis=1) - l2 * theta
        w = games * p * (1 - p)
        hess = -np.diag(w.sum(axis=1)) + w - l2 * np.eye(n)
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]  # l2 = 0: singular along (1, .., 1); take min-norm
        theta = theta - step
        if np.max(np.abs(step)) < 1e-9:
            break
    return theta - theta.mean()


def to_elo(theta: np.ndarray) -> np.ndarray:
    return ELO_BASE + ELO_SCALE * np.asarray(theta)


def leaderboard(votes: list[Vote], *, bootstrap: int = 200, seed: int = 0, ci: float = 0.95) -> list[dict]:
    """One row per model, best first: battles, wins, ties, losses, both_bad, win_rate, score, ci_low, ci_high."""
    models = sorted({m for v in votes for m in v.models})
    if not models:
        return []
    index = {m: i for i, m in enumerate(models)}
    wins, games = _aggregate(votes, index)
    score = to_elo(bradley_terry(wins, games))
    lo = hi = np.full(len(models), np.nan)
    if bootstrap and len(votes) > 1:
        rng = np.random.default_rng(seed)
        samples = np.empty((bootstrap, len(models)))
        for b in range(bootstrap):
            weights = np.bincount(rng.integers(0, len(votes), len(votes)), minlength=len(votes)).astype(float)
            bw, bg = _aggregate(votes, index, weights)
            samples[b] = to_elo(bradley_terry(bw, bg))
        alpha = (1 - ci) / 2 * 100
        lo, hi = np.percentile(samples, [alpha, 100 - alpha], axis=0)

    stats = {m: {"battles": 0, "wins": 0, "ties": 0, "losses": 0, "both_bad": 0} for m in models}
    for vote in votes:
        if vote.outcome == "bad":
            for m in vote.models:
                stats[m]["both_bad"] += 1
        for a, b, s in pairwise(vote):
            for m, r in ((a, s), (b, 1 - s)):
                st = stats[m]
                st["battles"] += 1
                st["wins" if r == 1 else "losses" if r == 0 else "ties"] += 1
    rows = []
    for m in models:
        st = stats[m]
        i = index[m]
        rows.append({
            "model": m, **st,
            "win_rate": (st["wins"] + 0.5 * st["ties"]) / st["battles"] if st["battles"] else float("nan"),
            "score": float(score[i]),
            "ci_low": float(lo[i]), "ci_high": float(hi[i]),
        })
    rows.sort(key=lambda r: (-r["score"], r["model"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows


# ------------------------------------------------------------------------------------------------
# the router checked against people
# ------------------------------------------------------------------------------------------------

def router_pick(engine, question: str, retrieval=None) -> dict:
    """The route (and its model) the auto router picks for ``question``, as a Chat answer in auto mode would:
    with the retrieval's query vector and passages when given (Compare stores this with each vote from now
    on), else with the question embedded and no passages (how older votes are recomputed)."""
    if retrieval is not None:
        vec, passages = retrieval.query_vector, [h.chunk.text for h in retrieval.hits]
    else:
        vec, passages = engine.embedder.encode_queries([question])[0], None
    route, reason, _ = engine.router.route(question, vec, passages=passages)
    return {"route": route, "model": engine.catalog.model_for_route(route).id, "reason": reason}


def vote_picks(votes: list[Vote], recompute=None) -> list[dict | None]:
    """The router's pick for each vote: the one stored with it (``meta["router"]``, ``source: "stored"``), else
    ``recompute(question)`` (``source: "recomputed"``), else None (no question, or nothing to recompute with)."""
    out = []
    for v in votes:
        stored = v.meta.get("router") if isinstance(v.meta, dict) else None
        if isinstance(stored, dict) and stored.get("route"):
            out.append({**stored, "source": "stored"})
        elif recompute is not None and v.question.strip():
            out.append({**recompute(v.question), "source": "recomputed"})
        else:
            out.append(None)
    return out


def leaderboard_by_route(votes: list[Vote], picks: list[dict | None], **kwargs) -> dict[str, list[dict]]:
    """The leaderboard of the votes on each route's questions (the route the router picks for the vote's
    question), routes in alphabetical order; votes without a pick are left out."""
    routes = sorted({p["route"] for p in picks if p})
    return {r: leaderboard([v for v, p in zip(votes, picks) if p and p["route"] == r], **kwargs) for r in routes}


def router_agreement(votes: list[Vote], picks: list[dict | None]) -> dict:
    """How often the model the router would have picked is the one people preferred.

    A vote counts when the router's model was one of its columns, under its own name (a contestant key equal to
    the catalog id: the model with its default sampling) and the router has a pick for it. Of those, ``decided``
    are votes with one winner (A-D), ``agreed`` those whose winner was the router's model; ``rate`` =
    agreed / decided; ``chance`` the mean of 1/columns over the decided votes (what picking a column at random
    would agree). Ties and "all bad" are counted in ``ties`` apart. Per route the same, in ``routes``."""
    def tally(pairs):
        shown = [(v, p) for v, p in pairs if p and p["model"] in v.models]
        decided = [(v, p) for v, p in shown if v.outcome in LABELS]
        agreed = sum(v.models[LABELS.index(v.outcome)] == p["model"] for v, p in decided)
        return {"votes": len(pairs), "router_model_shown": len(shown), "decided": len(decided), "agreed": agreed,
                "ties": len(shown) - len(decided),
                "rate": agreed / len(decided) if decided else float("nan"),
                "chance": float(np.mean([1 / len(v.models) for v, _ in decided])) if decided else float("nan")}

    pairs = list(zip(votes, picks))
    out = tally(pairs)
    out["recomputed"] = sum(1 for p in picks if p and p.get("source") == "recomputed")
    out["routes"] = {r: tally([(v, p) for v, p in pairs if p and p["route"] == r])
                     for r in sorted({p["route"] for p in picks if p})}
    return out


CSV_COLUMNS = ["rank", "model", "score", "ci_low", "ci_high", "win_rate", "battles", "wins", "ties", "losses",
               "both_bad"]


def leaderboard_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        out = dict(r)
        for key in ("score", "ci_low", "ci_high"):
            out[key] = "" if math.isnan(r[key]) else f"{r[key]:.1f}"
        out["win_rate"] = "" if math.isnan(r["win_rate"]) else f"{r['win_rate']:.4f}"
        w.writerow(out)
    return buf.getvalue()


__all__ = ["Arena", "ArenaError", "Vote", "OUTCOMES", "LABELS", "arena_path", "pairwise", "bradley_terry",
           "leaderboard", "leaderboard_csv", "to_elo", "router_pick", "vote_picks", "leaderboard_by_route",
           "router_agreement", "import_arena_sqlite"]
