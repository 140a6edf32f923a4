"""answer(): events, exactly-the-chunks-sent sources, citations, budget, fallback chain, errors, threads."""
import threading

import pytest

from rag.answer import Done, NoModelAvailable, Sources, Token, answer, parse_citations
from rag.catalog import ParamsError, UnknownModelError
from rag.llm import HealthCache
from rag.testing.fake_nim import Script, closed_port_url, fake_catalog
from rag.types import Chunk, Hit

KEY = "sekrit-test-key-42"


def make_hits(n=5, words=30):
    return [Hit(Chunk(id=f"doc{i}#0", doc_id=f"doc{i}", source=f"doc{i}.md", title=f"Doc {i}",
                      text=f"Chunk {i} says fact {i}. " + "filler " * words, start=0, end=10, page=i + 1),
                score=1.0 - i / 10) for i in range(n)]


def run(*args, **kwargs):
    kwargs.setdefault("health", HealthCache())
    events = list(answer(*args, **kwargs))
    assert isinstance(events[0], Sources) and isinstance(events[-1], Done)
    assert all(isinstance(e, Token) for e in events[1:-1])
    return events[0].hits, "".join(e.text for e in events[1:-1]), events[-1].meta


def test_events_sources_and_metadata(fake_nim):
    hits = make_hits(4)
    sent, text, meta = run("What does chunk 1 say?", hits, route="speed", retrieval_ms=12.5,
                           catalog=fake_catalog(fake_nim.base_url))
    assert text == "The answer is in the sources [1]."
    assert sent == hits and meta["sources"] == [h.chunk.id for h in hits]
    prompt = fake_nim.chat_requests[-1]["json"]["messages"][-1]["content"]
    for i, h in enumerate(sent, 1):   # the prompt numbers exactly the chunks reported, in order
        assert f"[{i}] (Doc {i - 1}" in prompt and h.chunk.text.strip() in prompt
    assert "[5]" not in prompt
    assert meta["route"] == "speed" and meta["model"] == "fake/model" and meta["endpoint"]["name"] == "local"
    assert meta["endpoint"]["kind"] == "local_nim" and meta["endpoint"]["base_url"] == fake_nim.base_url
    assert meta["retrieval_ms"] == 12.5 and meta["ttft_ms"] > 0 and meta["embedded"] is False
    assert meta["prompt_tokens"] > 0 and meta["completion_tokens"] == 4 and meta["usage_source"] == "server"
    assert meta["partial"] is False and meta["error"] is None and meta["fallbacks"] == []
    assert "cite" in fake_nim.chat_requests[-1]["json"]["messages"][0]["content"].lower()


def test_citations_map_to_the_chunks_sent(fake_nim):
    fake_nim.queue(Script(tokens=["Fact 2 ", "[2]", " and facts [1, 3]", " [3-4] and [9]."]))
    hits = make_hits(4)
    sent, text, meta = run("q?", hits, route="speed", catalog=fake_catalog(fake_nim.base_url))
    cites = parse_citations(text, sent)
    assert sorted(cites.used) == [1, 2, 3, 4] and cites.unknown == [9]
    assert cites.used[2] is sent[1] and cites.used[2].chunk.id == "doc1#0"


def test_parse_citations_forms():
    hits = make_hits(3)
    c = parse_citations("a [1][3] b [ 2 ] c [2–3] d [0] e [12] f [x] g [1,2,3]", hits)
    assert sorted(c.used) == [1, 2, 3] and c.unknown == [0, 12]
    assert parse_citations("no citations", hits).used == {}


def test_user_params_override_model_defaults(fake_nim):
    run("q?", make_hits(1), route="speed", params={"temperature": 0.0, "seed": 5, "stop": "END"},
        catalog=fake_catalog(fake_nim.base_url))
    body = fake_nim.chat_requests[-1]["json"]
    assert body["temperature"] == 0.0 and body["seed"] == 5 and body["stop"] == ["END"]
    assert body["top_p"] == 1.0 and body["max_tokens"] == 256   # the catalog's defaults


def test_bad_arguments_fail_at_the_call(fake_nim):
    cat = fake_catalog(fake_nim.base_url)
    with pytest.raises(ParamsError, match="temperature"):
        answer("q", [], params={"temperature": 9}, catalog=cat)
    with pytest.raises(UnknownModelError):
        answer("q", [], model="nope/nope", catalog=cat)
    with pytest.raises(ValueError, match="route"):
        answer("q", [], route="fastest", catalog=cat)
    with pytest.raises(ValueError, match="empty"):
        answer("  ", [], catalog=cat)


def test_budget_drops_chunks_and_condenses_history(fake_nim):
    cat = fake_catalog(fake_nim.base_url, context=1024)   # budget = 1024 - 256 - 64 = 704 estimated tokens
    hits = make_hits(10, words=60)                         # ~130 tokens each by the estimate
    history = []
    for i in range(6):
        history += [{"role": "user", "content": f"Earlier question {i}? " + "context " * 40},
                    {"role": "assistant", "content": f"Earlier answer {i}. " + "detail " * 60}]
    sent, _, meta = run("Final question?", hits, history=history, route="speed", catalog=cat)
    assert 0 < len(sent) < 10 and meta["chunks_dropped"] == 10 - len(sent) and sent == hits[:len(sent)]
    h = meta["history"]
    assert h["turns"] == 12 and h["kept"] < 12 and h["kept"] + h["condensed"] + h["dropped"] == 12
    msgs = fake_nim.chat_requests[-1]["json"]["messages"]
    sent_tokens = sum(len(m["content"].encode()) // 3 + 1 + 8 for m in msgs) + 4
    assert sent_tokens <= 1024 - 256
    assert msgs[-1]["role"] == "user" and msgs[-1]["content"].endswith("Question: Final question?")
    if h["condensed"]:
        assert "Earlier in this conversation the user asked" in msgs[0]["content"]


def test_question_too_long_for_every_model_is_reported(fake_nim, fake_embedded):
    cat = fake_catalog(fake_nim.base_url, context=1024)
    with pytest.raises(NoModelAvailable, match="too long"):
        list(answer("why " * 3000, make_hits(1), model="fake/model", catalog=cat, health=HealthCache()))


def test_fallback_local_down_to_hosted(fake_nim):
    cat = fake_catalog(fake_nim.base_url, local_url=closed_port_url())
    health = HealthCache()
    _, text, meta = run("q?", make_hits(2), route="speed", catalog=cat, health=health)
    assert meta["endpoint"]["name"] == "hosted" and text
    assert meta["fallbacks"][0]["endpoint"] == "local" and "not reachable" in meta["fallbacks"][0]["reason"]
    # the failed probe is cached: the second answer does not try local again
    _, _, meta2 = run("q?", make_hits(2), route="speed", catalog=cat, health=health)
    assert "cached" in meta2["fallbacks"][0]["reason"]


def test_fallback_to_embedded_when_nothing_else_is_configured(fake_embedded):
    cat = fake_catalog(closed_port_url(), environ={})
    sent, text, meta = run("q?", make_hits(3), route="quality", catalog=cat)
    assert meta["embedded"] is True and meta["warning"] and "SmolLM2" in meta["warning"]
    assert meta["model"] == "smollm2-135m-instruct" and meta["endpoint"]["kind"] == "embedded"
    reasons = {(f["endpoint"], f["model"]): f["reason"] for f in meta["fallbacks"]}
    assert reasons[("hosted", "fake/big")] == "FAKE_NIM_KEY is not set"
    assert "not reachable" in reasons[("local", "fake/model")]
    assert text == "Offline answer [1]." and len(fake_embedded) == 1


def test_server_errors_fall_back_with_reasons_and_no_key_leaks(fake_nim, fake_embedded):
    cat = fake_catalog(fake_nim.base_url, fallback_order=("hosted", "embedded"), attempts=2)
    fake_nim.queue(Script(status=500), Script(status=500),
                   Script(status=401, error_body={"title": "nope", "detail": f"key {KEY} rejected"}))
    _, _, meta = run("q?", make_hits(1), route="speed", catalog=cat)
    assert meta["embedded"] is True
    reasons = [f["reason"] for f in meta["fallbacks"]]
    assert any("HTTP 500" in r and "after 2 attempts" in r for r in reasons)
    assert any("FAKE_NIM_KEY" in r and "rejected" in r for r in reasons)
    assert KEY not in repr(meta)


def test_broken_stream_is_kept_and_marked_partial(fake_nim):
    fake_nim.queue(Script(disconnect_after=3))
    _, text, meta = run("q?", make_hits(2), route="speed", catalog=fake_catalog(fake_nim.base_url))
    assert text == "The answer is in the sources "
    assert meta["partial"] is True and "broke mid-answer" in meta["error"]


def test_manual_model_and_auto_route(fake_nim):
    cat = fake_catalog(fake_nim.base_url)
    _, _, meta = run("q?", make_hits(1), model="fake/big", catalog=cat)
    assert meta["mode"] == "model" and meta["model"] == "fake/big" and meta["endpoint"]["name"] == "hosted"
    from rag.router import Router

    router = Router.load(exemplar_vectors={})  # rules only, no embedder
    _, _, meta = run("Compare the pros and cons of A and B and explain why", make_hits(1), catalog=cat, router=router)
    assert meta["mode"] == "auto" and meta["route"] == "quality" and meta["model"] == "fake/big"
    assert meta["reason"].startswith("quality:")


def test_concurrent_answers_compare_tab(fake_nim):
    fake_nim.default = Script(chunk_delay_s=0.01)
    cat = fake_catalog(fake_nim.base_url)
    hits, results, errors = make_hits(3), {}, []

    def worker(i):
        try:
            results[i] = run("q?", hits, model="fake/model" if i % 2 else "fake/big", catalog=cat)
        except Exception as e:  # pragma: no cover - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 6
    assert all(r[1] == "The answer is in the sources [1]." and r[0] == hits for r in results.values())
