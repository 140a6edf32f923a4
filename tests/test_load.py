"""Load: 50 concurrent chat sessions plus an ingest, for 2 minutes, against the served app (its real
retrieval and MiniLM embedder) with the fake NIM on loopback answering. Every fifth session is a client of
the HTTP API (the openai SDK, streaming) with the read key of a reader user, so each of its requests asks the
state database for the key and the user's rights while the web sessions save their conversations there.
Bounded in sessions and time (HYBRID_RAG_LOAD_SESSIONS, HYBRID_RAG_LOAD_SECONDS); traffic goes to 127.0.0.1
only.

Pass: 0 errors, no lost documents, stable server memory.
"""
from __future__ import annotations

import os
import statistics
import threading
import time

import pytest
from reliability_kit import (
    GradioHTTP,
    ThreadErrors,
    admin_upload,
    collection_counts,
    create_collection,
    shared_server,
)

SESSIONS = int(os.environ.get("HYBRID_RAG_LOAD_SESSIONS", "50"))
SECONDS = float(os.environ.get("HYBRID_RAG_LOAD_SECONDS", "120"))
QUESTIONS = ["Where does the quokka live?", "What is neoteny?", "How do herons count birds?",
             "Which island is mentioned?", "What does document {i} say about specimens?"]


def _doc(i: int) -> bytes:
    return (f"# Field note {i}\n\nSpecimen {i} was seen near station {i % 7}. The quokka lives on Rottnest "
            f"Island; the axolotl keeps larval features. Note {i} ends here.\n").encode()


def _p(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


@pytest.mark.slow
def test_50_chat_sessions_and_an_ingest_for_two_minutes():
    from reliability_kit import ANSWER_TOKENS

    from rag.testing.fake_nim import Script

    served, nim = shared_server()
    nim.default = Script(tokens=ANSWER_TOKENS, ttft_s=0.05, chunk_delay_s=0.02)
    admin = GradioHTTP(served.url)
    assert create_collection(admin, "load")["success"]
    assert admin_upload(admin, "load", [(f"seed-{i}.md", _doc(i)) for i in range(5)])["success"]
    from rag.state import open_state_at

    state = open_state_at(served.data)
    state.add_user("load-reader", "load-reader-pw", "reader")
    state.grant("load", "load-reader", "reader")
    api_keys = {k: state.create_key(f"load-{k}", "read", "load-reader")   # one per client: each key may run
                for k in range(SESSIONS) if k % 5 == 4}                    # api.max_generations_per_key answers
    errors = ThreadErrors()
    latencies: list[float] = []
    answers = [0]
    lock = threading.Lock()
    uploaded: list[str] = []
    deadline = [0.0]
    start_gate = threading.Barrier(SESSIONS + 2, action=lambda: deadline.__setitem__(0, time.monotonic() + SECONDS))

    def api_session(k: int):
        from openai import OpenAI

        client = OpenAI(base_url=served.url + "/v1", api_key=api_keys[k], max_retries=0, timeout=180)
        try:
            start_gate.wait(timeout=300)
            n = 0
            while time.monotonic() < deadline[0]:
                q = QUESTIONS[(k + n) % len(QUESTIONS)].format(i=k)
                t = time.perf_counter()
                n += 1
                chunks = list(client.chat.completions.create(model="speed", stream=True, extra_body={
                    "collection": "load", "top_k": 4}, messages=[{"role": "user", "content": q}]))
                dt = time.perf_counter() - t
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                cites = (chunks[-1].model_extra or {}).get("citations") if chunks else None
                if "Rottnest Island [1]" not in text or not cites:
                    errors.add(f"api session {k}: bad answer {text[:120]!r}")
                    continue
                with lock:
                    latencies.append(dt)
                    answers[0] += 1
        except Exception as e:  # noqa: BLE001
            errors.add(f"api session {k}: {type(e).__name__}: {e}")

    def chat_session(k: int):
        if k % 5 == 4:
            return api_session(k)
        client = GradioHTTP(served.url, timeout=180)
        try:
            if not client.page_load()["success"]:
                errors.add(f"session {k}: page load failed")
            start_gate.wait(timeout=300)
            n = 0
            while time.monotonic() < deadline[0]:
                q = QUESTIONS[(k + n) % len(QUESTIONS)].format(i=k)
                t = time.perf_counter()
                out = client.call("chat-input", "submit",   # a new conversation each time (saved for the user)
                                  [q, [], None, "load", "hybrid", 4, "route:speed", 0.2, 64, None], timeout=180)
                dt = time.perf_counter() - t
                n += 1
                if not out["success"]:
                    errors.add(f"session {k}: {out['error']}")
                    continue
                chat, _hist, sources, meta = out["data"][:4]
                text = chat[-1]["content"][0]["text"] if isinstance(chat[-1]["content"], list) else chat[-1]["content"]
                if "Rottnest Island [1]" not in text or "hr-error" in meta or "hr-src" not in sources:
                    errors.add(f"session {k}: bad answer {text[:120]!r} / {meta[:200]!r}")
                    continue
                with lock:
                    latencies.append(dt)
                    answers[0] += 1
        except Exception as e:  # noqa: BLE001
            errors.add(f"session {k}: {type(e).__name__}: {e}")
        finally:
            client.close()

    def ingester():
        client = GradioHTTP(served.url, timeout=300)
        try:
            if not client.page_load()["success"]:
                errors.add("ingest: page load failed")
            start_gate.wait(timeout=300)
            i = 100
            while time.monotonic() < deadline[0] - 5:
                name = f"live-{i}.md"
                out = admin_upload(client, "load", [(name, _doc(i))])
                if not out["success"] or "1 of 1" not in out["data"][0]:
                    errors.add(f"ingest {name}: {out.get('error') or out['data'][0]}")
                else:
                    uploaded.append(name)
                i += 1
        except Exception as e:  # noqa: BLE001
            errors.add(f"ingest: {type(e).__name__}: {e}")
        finally:
            client.close()

    rss: list[tuple[float, int]] = []
    threads = [threading.Thread(target=chat_session, args=(k,), daemon=True) for k in range(SESSIONS)]
    threads.append(threading.Thread(target=ingester, daemon=True))
    for t in threads:
        t.start()
    start_gate.wait(timeout=300)
    t0 = deadline[0] - SECONDS
    while time.monotonic() < deadline[0]:
        rss.append((time.monotonic() - t0, served.rss_bytes()))
        time.sleep(2)
    for t in threads:
        t.join(timeout=240)
    elapsed = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), "a session hung past the time bound"
    admin.close()

    counts = collection_counts(served.data, "load")
    from rag.config import load_settings
    from rag.store import open_collection

    docs = {d["doc_id"] for d in open_collection("load", load_settings(data_dir=served.data)).documents()}
    early = [b for s, b in rss if SECONDS * 0.25 <= s <= SECONDS * 0.5]
    late = [b for s, b in rss if s >= SECONDS * 0.75]
    growth = (statistics.median(late) - statistics.median(early)) if early and late else 0
    print(f"\nload: {SESSIONS} sessions + 1 ingest for {elapsed:.0f} s: {answers[0]} answers "
          f"({answers[0] / elapsed:.1f}/s), latency p50 {_p(latencies, .5):.2f} s p95 {_p(latencies, .95):.2f} s "
          f"max {max(latencies, default=float('nan')):.2f} s; {len(uploaded)} uploads; {len(errors.errors)} errors; "
          f"server RSS {rss[0][1] / 2**20:.0f} -> {rss[-1][1] / 2**20:.0f} MiB "
          f"(median 2nd quarter {statistics.median(early) / 2**20:.0f}, last quarter {statistics.median(late) / 2**20:.0f})")
    assert not errors.errors, errors.errors[:10]
    assert answers[0] >= SESSIONS, "every session answered at least once"
    assert uploaded, "the ingest made progress under load"
    assert counts["consistent"], counts
    assert docs == {f"seed-{i}.md" for i in range(5)} | set(uploaded), "documents lost or invented"
    assert growth < max(150 * 2**20, 0.15 * statistics.median(early)), f"server memory grew by {growth / 2**20:.0f} MiB"
    assert served.proc.poll() is None


def test_per_version_caches_stay_bounded(settings):
    """Every commit makes a new version; a long-running server must not keep state for each one."""
    from reliability_kit import FakeEmbedder

    from ingest.pipeline import ingest
    from rag.retrieve import Retriever
    from rag.store import open_collection, reader  # reader: the files backend

    emb = FakeEmbedder()
    for i in range(reader._STATS_MAX + 4):
        ingest("grow", [(f"d{i}.md", _doc(i))], settings=settings, embedder=emb)
        Retriever(open_collection("grow", settings), emb, settings.retrieval).search("quokka", k=2)
    assert len(reader._STATS) <= reader._STATS_MAX
