"""Answer evaluation (rag/answereval.py, rag/judge.py, hybrid-rag eval-answers): golden sets, one retrieval per
question for every model, the automatic scores, the judge over real HTTP against the fake NIM (a scripted grade
and a malformed one), no judge offline, fallbacks left out of a model's metrics, saved runs and the CLI."""
from __future__ import annotations

import json

import pytest
from reliability_kit import FakeEmbedder

from rag import answereval as ae
from rag.errors import InvalidInput
from rag.judge import open_judge, parse_grade
from rag.testing.fake_nim import Script, closed_port_url, fake_catalog

FAKE = FakeEmbedder()
DOCS = {
    "cats.md": "# Cats\n\nCats sleep sixteen hours a day. A cat grooms itself with its rough tongue.\n",
    "dogs.md": "# Dogs\n\nDogs need a walk twice a day. A dog wags its tail when it is happy.\n",
}
GOLDEN = "\n".join(json.dumps(r) for r in [
    {"id": "cats", "question": "How long do cats sleep?", "reference": "Cats sleep sixteen hours a day.",
     "expected_docs": ["cats.md"]},
    {"id": "moon", "question": "What is the price of a moon ticket?", "answerable": False},
])


def _engine(settings, catalog):
    from ingest.pipeline import ingest
    from rag.engine import Engine

    ingest("c", [(n, t.encode()) for n, t in DOCS.items()], settings=settings, embedder=FAKE)
    return Engine(settings, embedder=FAKE, catalog=catalog)


# --- golden sets ------------------------------------------------------------------------------------------
def test_golden_set_fields_and_defaults():
    items = ae.parse_golden(GOLDEN + '\n\n{"question": "  Why   so?  "}\n')
    assert [i.id for i in items] == ["cats", "moon", "4"]
    assert items[0].expected_docs == ["cats.md"] and items[0].reference.startswith("Cats")
    assert items[1].answerable is False and items[1].reference is None
    assert items[2].question == "Why so?" and items[2].answerable is True


@pytest.mark.parametrize("line, says", [
    ("{not json", "line 1 is not JSON"),
    ('{"reference": "x"}', "line 1 has no question"),
    ('{"question": "q", "answer": "x"}', "unknown field(s) answer"),
    ('{"question": "q", "answerable": "no"}', "answerable must be true or false"),
    ('{"question": "q", "expected_docs": [3]}', "expected_docs must be a list"),
    ('{"id": "a", "question": "q"}\n{"id": "a", "question": "r"}', "line 2: the id 'a' is used twice"),
    ("", "holds no questions"),
])
def test_bad_golden_lines_say_where_and_how_to_fix(line, says):
    with pytest.raises(InvalidInput, match=None) as e:
        ae.parse_golden(line, "set.jsonl")
    assert says in str(e.value)


def test_shipped_example_covers_the_starter_docs():
    from rag.config import SOURCE_ROOT
    from ui.serve import starter_files

    items = ae.load_golden()
    assert 15 <= len(items) <= 25
    assert sum(not i.answerable for i in items) >= 3
    names = {n for n, _ in starter_files(SOURCE_ROOT)}
    assert all(d in names for i in items for d in i.expected_docs), names
    assert all(i.reference and i.expected_docs for i in items if i.answerable)


@pytest.mark.parametrize("text, meta, why", [
    ("The sources do not say what a moon ticket costs.", {}, "says_not_in_sources"),
    ("The provided passages don't mention any price [1].", {}, "says_not_in_sources"),
    ("There is not enough information to answer.", {}, "says_not_in_sources"),
    ("I cannot answer that from these documents.", {}, "says_not_in_sources"),
    ("Pricing is not mentioned in the documentation.", {}, "says_not_in_sources"),
    ("Extracted from the sources (the offline model's answer was unusable: it was empty):\n\n- Cats [1]",
     {"extractive": True}, "extractive_only"),
    ("A ticket costs 40 dollars [1].", {}, None),
    ("The documents describe how cats sleep [1].", {}, None),
])
def test_refusal_definition(text, meta, why):
    assert ae.is_refusal(text, meta) == why


# --- the judge's reply --------------------------------------------------------------------------------------
@pytest.mark.parametrize("reply, want", [
    ('{"groundedness": 5, "quality": 4, "reason": "fine"}', (5, 4, "fine")),
    ('Sure!\n```json\n{"groundedness": "4/5", "quality": 3.0, "reason": "ok"}\n```', (4, 3, "ok")),
    ("{'Groundedness': 2, 'Quality': 1, 'reason': 'made up'}", (2, 1, "made up")),
    ('{"groundedness": 9, "quality": 3}', "not a whole number from 1 to 5"),
    ('{"quality": 3, "reason": "x"}', "no JSON object with groundedness and quality"),
    ("I think it is good.", "no JSON object"),
    ("", "empty"),
])
def test_parse_grade(reply, want):
    g = parse_grade(reply)
    if isinstance(want, tuple):
        assert (g["groundedness"], g["quality"], g["reason"]) == want
    else:
        assert want in g["error"]


# --- runs against the fake NIM ---------------------------------------------------------------------------------
def test_two_models_get_the_same_passages_and_are_scored_and_judged(settings, fake_nim):
    settings.evaluation.max_tokens = 64
    catalog = fake_catalog(fake_nim.base_url)
    engine = _engine(settings, catalog)
    judge = open_judge(engine.live_catalog(), "fake/big", health=engine.health)
    assert judge.available and judge.status.startswith("judged by fake/big")
    grade = '{"groundedness": 5, "quality": 4, "reason": "says what passage 1 says"}'
    fake_nim.queue(
        Script(tokens=["Cats sleep ", "sixteen hours a day [1]."]),           # cats · fake/model
        Script(tokens=[grade]),                                              # judge
        Script(tokens=["Cats sleep sixteen hours [1][9]. ", "They purr."]),   # cats · fake/big
        Script(tokens=["Verdict: great!"]),                                  # judge, malformed
        Script(tokens=["The sources do not say what a moon ticket costs."]),  # moon · fake/model
        Script(tokens=[grade]),
        Script(tokens=["A moon ticket costs 40 dollars [1]."]),              # moon · fake/big
        Script(tokens=['{"groundedness": 1, "quality": 1, "reason": "invented"}']),
    )
    seen = []
    result = ae.run(engine, "c", ae.parse_golden(GOLDEN), ["fake/model", "fake/big"], judge=judge, max_tokens=64,
                    progress=lambda i, n, m: seen.append((i, n)))
    assert seen[-1] == (4, 4)
    answers = [r for r in fake_nim.chat_requests if "Reply with one JSON object" not in str(r["json"]["messages"])]
    assert [r["json"]["model"] for r in answers] == ["fake/model", "fake/big"] * 2
    assert answers[0]["json"]["messages"][-1] == answers[1]["json"]["messages"][-1]   # the same passages
    assert answers[0]["json"]["max_tokens"] == 64

    cats = result.questions[0]["answers"]
    a, b = cats["fake/model"]["scores"], cats["fake/big"]["scores"]
    assert a["citation_validity"] == 1.0 and a["citation_coverage"] == 1.0 and a["expected_doc_recall"] == 1.0
    assert a["supported_rate"] == 1.0 and a["refusal"] is None
    assert b["citation_validity"] == 0.5 and b["unknown_citations"] == [9] and b["citation_coverage"] == 0.5
    assert a["reference_similarity"] > 0.99 > b["reference_similarity"] > 0
    assert a["ttft_ms"] is not None and a["tokens_per_s"] is not None
    assert cats["fake/model"]["judge"]["groundedness"] == 5 and "error" in cats["fake/big"]["judge"]
    moon = result.questions[1]["answers"]
    assert moon["fake/model"]["scores"]["refusal"] == "says_not_in_sources"
    assert moon["fake/big"]["scores"]["refusal"] is None

    s = result.summary
    assert s["fake/model"]["refusal_rate"] == 1.0 and s["fake/big"]["refusal_rate"] == 0.0
    assert s["fake/model"]["false_refusal_rate"] == 0.0 and s["fake/model"]["answered"] == 2
    assert s["fake/big"]["citation_validity"] == 0.75           # mean of 0.5 (cats) and 1.0 (moon)
    assert s["fake/model"]["judge"] == {"judged": 2, "groundedness": 5.0, "quality": 4.0, "errors": 0}
    assert s["fake/big"]["judge"] == {"judged": 1, "groundedness": 1.0, "quality": 1.0, "errors": 1}
    assert result.judge["ran"] is True and result.judge["graded"] == 3


def test_offline_no_judge_runs_and_a_fallback_is_not_counted(settings, fake_embedded):
    down = closed_port_url()
    catalog = fake_catalog(down, environ={})      # local down, hosted without its key: only the embedded model
    engine = _engine(settings, catalog)
    judge = open_judge(catalog, "fake/big", health=engine.health)
    assert not judge.available and judge.status.startswith("no judge ran: fake/big has no usable endpoint")
    assert "FAKE_NIM_KEY is not set" in judge.status
    with pytest.raises(InvalidInput, match="never used as a judge"):
        open_judge(catalog, "smollm2-135m-instruct")
    assert open_judge(catalog, "none").status.startswith("no judge ran: none configured")

    result = ae.run(engine, "c", ae.parse_golden(GOLDEN)[:1], ["fake/model", "smollm2-135m-instruct"], judge=judge)
    fell = result.questions[0]["answers"]["fake/model"]
    assert fell["answered_by"] == "smollm2-135m-instruct" and "instead" in fell["fell_back"] and "scores" not in fell
    assert result.summary["fake/model"]["answered"] == 0 and result.summary["fake/model"]["fell_back"] == 1
    own = result.questions[0]["answers"]["smollm2-135m-instruct"]
    assert own["scores"]["citation_validity"] == 1.0 and "judge" not in own
    assert result.judge["ran"] is False and result.judge["status"].startswith("no judge ran")
    assert result.summary["smollm2-135m-instruct"]["judge"] is None


def test_unreachable_hosted_judge_is_dropped_after_the_first_failure(settings, fake_nim):
    catalog = fake_catalog(fake_nim.base_url)
    engine = _engine(settings, catalog)
    dead = fake_catalog(closed_port_url(), attempts=1)
    judge = open_judge(dead, "fake/big")          # hosted endpoints count as up until a call fails
    assert judge.available
    result = ae.run(engine, "c", ae.parse_golden(GOLDEN), ["fake/model"], judge=judge)
    assert not judge.available and "could not be reached" in judge.status
    assert result.judge["ran"] is False and result.judge["status"].startswith("no judge ran")
    assert "judge" not in result.questions[1]["answers"]["fake/model"]      # not tried again


def test_models_are_resolved_and_bounded(settings, fake_nim):
    catalog = fake_catalog(fake_nim.base_url)
    assert ae.resolve_models(catalog, "quality,fake/model, fake/big") == ["fake/big", "fake/model"]
    assert ae.resolve_models(catalog, "") == ["smollm2-135m-instruct"]
    with pytest.raises(Exception, match="fake/nope"):
        ae.resolve_models(catalog, "fake/nope")


def test_saved_run_round_trip_and_csv(settings, fake_nim):
    engine = _engine(settings, fake_catalog(fake_nim.base_url))
    fake_nim.default = Script(tokens=["Cats sleep sixteen hours a day [1]."])
    result = ae.run(engine, "c", ae.parse_golden(GOLDEN), ["fake/model"], judge=None)
    run_id = ae.save(result, settings.data_dir)
    assert [e["id"] for e in ae.list_saved(settings.data_dir)] == [run_id]
    back = ae.load(settings.data_dir, run_id)
    assert back.summary == json.loads(json.dumps(result.summary)) and back.golden == result.golden
    assert json.loads((ae.runs_root(settings.data_dir) / run_id / "run.json").read_text())["version"] == 1
    lines = ae.to_csv(back).splitlines()
    assert lines[0].startswith("id,question,answerable,model") and len(lines) == 3
    assert "cats,How long do cats sleep?,True,fake/model" in lines[1]
    back.questions[0]["question"] = "=HYPERLINK(1)"
    assert ",'=HYPERLINK(1),True," in ae.to_csv(back)                  # never a formula in a spreadsheet
    with pytest.raises(InvalidInput):
        ae.load(settings.data_dir, "../etc")


def test_cli_eval_answers_json_last_line(settings, tmp_path, monkeypatch, fake_embedded, capsys):
    from ingest.pipeline import ingest
    from rag import cli, embed

    monkeypatch.setattr(embed, "make_embedder", lambda *a, **k: FAKE)
    monkeypatch.setenv("HYBRID_RAG__MODELS__FALLBACK_ORDER", "embedded")
    ingest("c", [(n, t.encode()) for n, t in DOCS.items()], settings=settings, embedder=FAKE)
    golden = tmp_path / "g.jsonl"
    golden.write_text(GOLDEN)
    out = tmp_path / "out"
    rc = cli.main(["--data-dir", str(settings.data_dir), "eval-answers", "-c", "c", "--golden", str(golden),
                   "--models", "smollm2-135m-instruct", "--judge", "none", "--save", str(out), "--json", "-q"])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    last = json.loads(stdout.strip().splitlines()[-1])
    assert list(last) == ["smollm2-135m-instruct"] and last["smollm2-135m-instruct"]["answered"] == 2
    assert last["smollm2-135m-instruct"]["citation_validity"] == 1.0
    assert "judge: no judge ran" in stdout
    assert (out / "answers.csv").read_text().count("\n") == 3 and len(ae.list_saved(settings.data_dir)) == 1
    rc = cli.main(["--data-dir", str(settings.data_dir), "eval-answers", "-c", "c", "--golden", str(golden),
                   "--judge", "smollm2-135m-instruct"])
    assert rc == 2 and "never used as a judge" in capsys.readouterr().err
