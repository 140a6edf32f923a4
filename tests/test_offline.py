"""The offline model's answers: the compact prompt, the loop stop, the extractive fallback, citations added
from support, and background ingest stepping aside for interactive requests. The embedded model is scripted
here (no llama.cpp); tests/test_offline_answers.py runs the real one."""
from __future__ import annotations

import os
import random
import threading
import time

import pytest

from rag import interactive
from rag.answer import (
    EMBEDDED_SYSTEM_PROMPT,
    SYSTEM_PROMPT,
    Done,
    Sources,
    Token,
    answer,
    parse_citations,
)
from rag.extractive import EXTRACTED_LABEL, attribute, extract, trim, units
from rag.llm import EmbeddedClient, HealthCache, Stream
from rag.repetition import HOLDBACK_WORDS, LoopGuard, repetition_stats
from rag.testing.fake_nim import closed_port_url, fake_catalog
from rag.types import Chunk, Hit

UPLOAD = ("## Documents\n\nAnyone can browse collections and preview a document's chunks.\n\n"
          "- **Upload** many files at once, `.zip` archives included. A progress bar runs while they are\n"
          "  indexed, and a table then says for each file how many chunks were added, or why it failed.\n"
          "- **Delete document** removes the selected document.\n\n"
          "Limits on uploads come from the `limits` section of `configs/default.yaml`.")
PAGES = [
    ("docs/ui.md", "The web app", UPLOAD),
    ("docs/api.md", "The HTTP API", "Keys are created on the server with `hybrid-rag keys create --name NAME`. "
     "Each key may run two answers at once. A third one is refused with 429."),
    ("README.md", "hybrid-rag", "The embedded SmolLM2 model answers when no NIM endpoint is reachable. It runs "
     "offline on the CPU, and its answers are marked as weak."),
    ("docs/architecture.md", "Architecture", "Dense and sparse scores are fused by a convex combination of "
     "z-normalised scores. The weights are settings."),
]
LOOP_LINE = "The file `tests/test.py` is uploaded to the server and the upload fails.\n"


def make_hits(pages=PAGES):
    return [Hit(Chunk(id=f"{src}#{i}", doc_id=src, source=src, title=title, text=text, start=0, end=len(text)),
                score=1.0 - i / 10) for i, (src, title, text) in enumerate(pages)]


# --- sentences -----------------------------------------------------------------------------------------

def test_units_split_markdown_into_sentences_items_code_and_rows():
    text = ("# Title\n\nFirst sentence here. Second one follows,\nwrapped over a line.\n\n- An item that\n  continues."
            "\n\n```bash\nhybrid-rag serve\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    got = [(u.kind, u.text) for u in units(text)]
    assert got == [("heading", "Title"), ("sentence", "First sentence here."),
                   ("sentence", "Second one follows, wrapped over a line."), ("item", "An item that continues."),
                   ("code", "hybrid-rag serve"), ("row", "| a | b |"), ("row", "| 1 | 2 |")]


def test_units_of_a_chunk_that_starts_inside_a_code_block():
    got = units("    --port 7860\n```\n\nThe server starts. It listens on loopback.")
    assert [u.kind for u in got] == ["code", "sentence", "sentence"]


def test_trim_keeps_the_best_matching_sentences_in_order_within_the_budget():
    hits = make_hits()[:1]
    count = lambda s: len(s.split())  # noqa: E731 - a word count stands in for the tokenizer
    [text] = trim("What happens to a file that fails to upload?", hits, 40, count)
    assert "why it failed" in text and count(text) <= 40 + 2
    assert "Delete document" not in text and "Anyone can browse" not in text and "## Documents" not in text
    [whole] = trim("upload", hits, 500, count)
    assert whole.index("Upload") < whole.index("…") < whole.index("Limits")
    [first] = trim("zebras", hits, 12, count)   # nothing matches: the passage's first units
    assert first.startswith("Anyone can browse")


def test_extract_labels_and_cites_each_sentence():
    hits = make_hits()
    text = extract("How do I create an API key?", hits, "was unusable: it repeated itself")
    assert text.startswith(EXTRACTED_LABEL.format(why="was unusable: it repeated itself"))
    lines = text.splitlines()[1:]
    assert lines and all(ln.startswith("- ") and ln.rstrip().endswith("]") for ln in lines)
    assert "hybrid-rag keys create" in text and "[2]" in text
    assert set(parse_citations(text, hits).used) <= {1, 2, 3, 4}
    dup = make_hits([PAGES[1], PAGES[1]])   # overlapping chunks: a sentence is quoted once
    assert extract("create API key", dup, "x").count("Keys are created") == 1


def test_attribute_finds_the_passage_an_answer_comes_from():
    hits = make_hits()
    said = "Scores from dense and sparse search are combined with z-normalised weights."
    assert attribute(said, "How are results fused?", hits) == [4]
    assert attribute("Bananas are yellow and grow in tropical plantations.", "How are results fused?", hits) == []


# --- the loop stop ---------------------------------------------------------------------------------------

def feed_all(text: str, pieces: int = 3, seed: int = 0) -> tuple[LoopGuard, str]:
    """Stream ``text`` through a guard in pieces of 1..``pieces`` characters; return it and what it released."""
    rng, guard, out, i = random.Random(seed), LoopGuard(), [], 0
    while i < len(text) and guard.loop is None:
        n = rng.randint(1, pieces)
        out.append(guard.feed(text[i:i + n]))
        i += n
    out.append(guard.finish())
    return guard, "".join(out)


def test_the_issue_loop_is_stopped_before_its_first_repeat_is_shown():
    text = "Upload files in the Documents tab [1].\n\n" + LOOP_LINE * 20
    guard, shown = feed_all(text, pieces=5)
    assert guard.loop is not None and guard.loop.rule in ("long_ngram", "line")
    assert shown == guard.text and shown.count("tests/test.py") == 1
    assert guard.loop.words < 40   # caught in the first repeat, not at max tokens


@pytest.mark.parametrize("text, rule", [
    ("Intro sentence for the answer here.\n" + "- yes\n" * 4, "line"),
    ("It works because it works because it works because it works fine.", "short_ngram"),
    ("The sources are " + " ".join(f"[{i}]" for i in range(1, 40)), "short_ngram"),
    ("A heading follows now:\n" + "-" * 60, "periodic"),
])
def test_each_loop_rule(text, rule):
    guard, shown = feed_all(text)
    assert guard.loop is not None and guard.loop.rule == rule
    stats = repetition_stats(shown)
    assert stats["max_line_repeats"] <= 2 and stats["max_4gram"] <= 4


def test_an_answer_without_repetition_passes_unchanged_and_is_held_back_only_briefly():
    text = ("Open the Documents tab, type the admin password and upload your files [1]. A table then says for each "
            "file how many chunks were added, or why it failed [1].\n\n- Limits come from the settings [2].")
    guard, shown = feed_all(text)
    assert guard.loop is None and shown == text
    g = LoopGuard()
    released = "".join(g.feed(w + " ") for w in text.split()[:HOLDBACK_WORDS])
    assert released == ""                                    # the first words wait ...
    assert g.feed("more ") and g.feed("words ")              # ... then flow, a word behind each new one


def test_random_degenerate_streams_never_show_a_repeat():
    rng = random.Random(7)
    vocab = "the file upload fails [1] server sends a POST request to and then".split()
    for seed in range(40):
        head = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 30)))
        unit = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 12)))
        sep = rng.choice([" ", "\n", ". ", "\n\n"])
        guard, shown = feed_all(head + sep + (unit + sep) * rng.randint(3, 15), pieces=6, seed=seed)
        stats = repetition_stats(shown)
        assert stats["max_line_repeats"] <= 2 and stats["max_4gram"] <= 4, (seed, shown)
        assert shown == guard.text


# --- answer() with a scripted embedded model -------------------------------------------------------------

@pytest.fixture
def scripted(monkeypatch):
    """The embedded model replies with the pieces queued in ``replies``; ``calls`` records what it was sent."""
    replies, calls, closed = [], [], []

    def open_(self, messages, params):
        calls.append({"messages": messages, "params": params, "client": self})
        pieces = list(replies.pop(0) if replies else ["Offline ", "answer [1]."])

        def gen():
            try:
                yield from pieces
            finally:
                closed.append(True)

        s = Stream(gen(), self.endpoint, self.model, self.api_model)
        s.finish_reason, s.completion_tokens, s.prompt_tokens = "stop", len(pieces), 10
        return s

    monkeypatch.setattr(EmbeddedClient, "open", open_)
    monkeypatch.setattr(EmbeddedClient, "count_tokens", lambda self, text: len(text.encode()) // 4 + 1)
    return replies, calls, closed


def ask(question, hits, options=None, history=None):
    cat = fake_catalog(closed_port_url(), fallback_order=("embedded",))
    events = list(answer(question, hits, route="speed", catalog=cat, health=HealthCache(),
                         embedded_options=options or {},
                         history=history))
    assert isinstance(events[0], Sources) and isinstance(events[-1], Done)
    tokens = [e.text for e in events[1:-1]]
    assert all(isinstance(e, Token) for e in events[1:-1])
    return events[0].hits, tokens, events[-1].meta


def words(text):
    return [w + " " for w in text.split(" ")]


def test_the_loop_of_the_issue_becomes_a_cited_answer(scripted):
    replies, calls, closed = scripted
    replies.append(words("Upload your files in the Documents tab [1].\n" + LOOP_LINE * 20))
    sent, tokens, meta = ask("How do I upload documents, and what happens to a file that fails?", make_hits())
    text = "".join(tokens)
    assert text.count("tests/test.py") <= 1 and closed            # stopped, and the model was told so
    assert meta["loop_stop"]["rule"] in ("long_ngram", "line") and meta["finish_reason"] == "stop"
    assert parse_citations(text, sent).used and meta["embedded"] is True
    stats = repetition_stats(text)
    assert stats["max_line_repeats"] <= 2 and stats["max_4gram"] <= 4


def test_an_early_loop_is_replaced_by_the_extractive_answer(scripted):
    replies, _, _ = scripted
    replies.append(words("The upload fails [1].\n" * 20))
    sent, tokens, meta = ask("What happens to a file that fails to upload?", make_hits())
    text = "".join(tokens)
    assert tokens[0].startswith("Extracted from the sources (the offline model's answer was unusable")
    assert "The upload fails" not in text                        # nothing of the loop was shown
    assert meta["extractive"] is True and meta["extractive_reason"] == "loop"
    assert "extracted" in meta["warning"] and parse_citations(text, sent).used


def test_an_empty_answer_is_replaced(scripted):
    replies, _, _ = scripted
    replies.append(["[1]", "."])
    _, tokens, meta = ask("How do I create an API key?", make_hits())
    assert "".join(tokens).startswith(EXTRACTED_LABEL.format(why="was unusable: it was empty"))
    assert meta["extractive_reason"] == "empty"


def test_an_uncited_answer_is_followed_by_extracted_sentences(scripted):
    replies, _, _ = scripted
    long_text = ("Uploads go through the documents tab, keys are created on the server, and the offline model "
                 "answers when no endpoint is reachable.")   # from the sources, but from no one passage
    replies.append(words(long_text))
    sent, tokens, meta = ask("How do I create an API key?", make_hits())
    text = "".join(tokens)
    assert text.startswith("Uploads go through the documents tab")   # shown as it came ...
    assert "\n\n" + EXTRACTED_LABEL.format(why="above cites no source") in text   # ... then labelled extracts
    assert meta["extractive_reason"] == "no_citation" and parse_citations(text, sent).used


def test_an_uncited_answer_that_says_what_a_passage_says_gets_its_number(scripted):
    replies, _, _ = scripted
    replies.append(words("Keys are created on the server with the keys create command, and each key may run two "
                         "answers at once."))
    _, tokens, meta = ask("How do I create an API key?", make_hits())
    text = "".join(tokens)
    assert text.endswith("at once. [2]") and meta["citations_added"] == [2] and meta["extractive"] is False


def test_a_good_answer_is_untouched(scripted):
    replies, _, _ = scripted
    good = "Keys are created with `hybrid-rag keys create` on the server [2]. Each runs two answers at once [2]."
    replies.append(words(good))
    _, tokens, meta = ask("How do I create an API key?", make_hits())
    assert "".join(tokens) == good + " "
    assert meta["extractive"] is False and meta["loop_stop"] is None and meta["citations_added"] == []
    assert meta["warning"] and "extracted" not in meta["warning"]


def test_loop_stop_off_passes_the_model_through(scripted):
    replies, _, _ = scripted
    replies.append(words(LOOP_LINE * 5))
    _, tokens, meta = ask("q?", make_hits(), {"loop_stop": False})
    assert "".join(tokens) == "".join(words(LOOP_LINE * 5)) and meta["loop_stop"] is None


def test_the_compact_prompt_sends_few_trimmed_passages_numbered_as_sources(scripted):
    _, calls, _ = scripted
    hits = make_hits()
    sent, _, meta = ask("What happens to a file that fails to upload?", hits, {"passages": 2, "passage_tokens": 60})
    assert sent == hits[:2] and meta["sources"] == [h.chunk.id for h in hits[:2]] and meta["chunks_dropped"] == 2
    msgs = calls[-1]["messages"]
    assert msgs[0] == {"role": "system", "content": EMBEDDED_SYSTEM_PROMPT} and meta["prompt_style"] == "compact"
    user = msgs[-1]["content"]
    assert user.count("\n[1] ") == 1 and "\n[2] Keys are created" in user and "[3]" not in user.split("Question:")[0]
    assert "why it failed" in user and "Delete document" not in user    # the best sentences, not the whole chunk
    assert "Anyone can browse" not in user
    assert user.rstrip().endswith("like [1].") and "Question: What happens to a file" in user


def test_the_compact_prompt_keeps_recent_history_and_condenses_older_questions(scripted):
    _, calls, _ = scripted
    history = []
    for i in range(4):
        history += [{"role": "user", "content": f"Earlier question {i}? " + "words " * 30},
                    {"role": "assistant", "content": f"Earlier answer {i}. " + "detail " * 60}]
    history += [{"role": "user", "content": "Last question?"}, {"role": "assistant", "content": "Last answer [1]."}]
    _, _, meta = ask("And now?", make_hits(), history=history)
    msgs = calls[-1]["messages"]
    assert meta["history"]["turns"] == 10 and meta["history"]["kept"] == 2 and meta["history"]["condensed"] == 8
    assert msgs[-3]["content"] == "Last question?" and "Earlier in this conversation" in msgs[0]["content"]


def test_the_full_prompt_is_still_there_for_the_embedded_model(scripted):
    _, calls, _ = scripted
    hits = make_hits()
    sent, _, meta = ask("q?", hits, {"prompt": "full"})
    assert sent == hits and calls[-1]["messages"][0]["content"].startswith(SYSTEM_PROMPT)
    assert meta["prompt_style"] == "full"


# --- background work steps aside -------------------------------------------------------------------------

def test_gate_admits_fewer_background_batches_while_a_request_is_active():
    gate = interactive.Gate(4)
    assert gate.limit() == 4
    with interactive.request():
        assert interactive.active() == 1 and gate.limit() == 2
    assert interactive.active() == 0 and gate.limit() == 4

    running, peak, lock = [0], [0], threading.Lock()

    def batch():
        with gate.slot():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.02)
            with lock:
                running[0] -= 1

    with interactive.request():
        threads = [threading.Thread(target=batch) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert peak[0] == 2


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread priority on this OS")
@pytest.mark.may_skip
def test_lower_priority_raises_a_threads_nice_value():
    seen = {}

    def work():
        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        interactive.lower_priority()
        seen["delta"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) - before
        seen["main"] = os.getpriority(os.PRIO_PROCESS, threading.main_thread().native_id)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["delta"] > 0 and seen["main"] == os.getpriority(os.PRIO_PROCESS, 0)


def test_document_embedding_runs_on_low_priority_threads_and_matches_queries(embedder):
    if not hasattr(embedder, "_gate"):
        pytest.skip("the torch embedder has no background gate")
    texts = ["Cats sleep a lot.", "Dogs like walks.", "Herons hunt fish at dawn."]
    with interactive.request():   # a request in progress: documents still embed (one batch at a time)
        docs = embedder.encode_documents(texts)
    assert abs(docs - embedder.encode_queries(texts)).max() < 1e-5
    nice = embedder._executor().submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
    assert nice >= os.getpriority(os.PRIO_PROCESS, 0) + 1 or not hasattr(os, "setpriority")


def test_free_cores_is_a_share_of_the_usable_cores():
    free = interactive.free_cores(0.02)
    assert free is None or 0 <= free <= interactive.usable_cores()


def test_the_prompt_copied_back_is_an_empty_answer(scripted):
    replies, _, _ = scripted
    replies.append(words("Which file types can be uploaded?\nAnswer in one or two sentences. Cite the source number "
                         "like [1]."))
    _, tokens, meta = ask("Which file types can be uploaded?", make_hits())
    text = "".join(tokens)   # its first words were shown (the hold-back is 10 words): extracts follow, labelled
    assert meta["extractive_reason"] == "empty" and EXTRACTED_LABEL.format(why="above is too short") in text


def test_a_made_up_answer_is_followed_by_extracted_sentences(scripted):
    replies, _, _ = scripted
    replies.append(words("BM25 is a deep learning method for image classification from Berkeley, trained on "
                         "photographs of cats and satellites [1]."))
    sent, tokens, meta = ask("What is BM25 used for?", make_hits())
    text = "".join(tokens)
    assert meta["extractive_reason"] == "unsupported"
    assert EXTRACTED_LABEL.format(why="above is mostly not in the sources") in text and "unsupported" not in text
