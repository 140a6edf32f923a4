"""A judge model grades answers: groundedness and quality, 1-5 each, with a one-line reason.

The rubric and the whole prompt are ``configs/judge_prompt.md``; the judge is any catalog model reached through
its normal (non-embedded) endpoints, ``evaluation.judge_model`` (Nemotron-70B by default). Nothing falls back:
the 135M offline model is never a judge, and when no endpoint of the judge model is usable
:func:`open_judge` returns a :class:`Judge` whose ``available`` is False and whose ``status`` says why, so a
run can say plainly that no judge ran.

::

    judge = open_judge(catalog, "nvidia/llama-3.1-nemotron-70b-instruct", health=engine.health)
    if judge.available:
        grade = judge.grade(question, hits, answer_text, reference=None, answerable=True)
        grade["groundedness"], grade["quality"], grade["reason"]     # or grade["error"]
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .catalog import Catalog, SamplingParams
from .config import CONFIG_DIR
from .errors import InvalidInput
from .llm import (
    HEALTH,
    EndpointError,
    HealthCache,
    LLMError,
    make_client,
    probe,
    redact,
)
from .types import Hit

PROMPT_FILE = CONFIG_DIR / "judge_prompt.md"
DEFAULT_JUDGE = "nvidia/llama-3.1-nemotron-70b-instruct"
SCALES = ("groundedness", "quality")
JUDGE_MAX_TOKENS = 200        # the reply is one JSON line
PASSAGE_CHARS = 1500          # each passage as the judge sees it, at most

NOT_ANSWERABLE_NOTE = ("\nThis question cannot be answered from the documents. The best answer says so plainly "
                       "(quality 5); an answer that gives an answer anyway gets quality 1, and groundedness by "
                       "whether what it states is in the passages.\n")


def load_prompt(path=None) -> str:
    """The judge prompt template (``configs/judge_prompt.md``)."""
    p = PROMPT_FILE if path is None else path
    try:
        return open(p, encoding="utf-8").read()
    except OSError as e:
        raise InvalidInput(f"The judge prompt {p} cannot be read ({e.strerror or e}): restore "
                           "configs/judge_prompt.md from the repository.") from e


def render(template: str, question: str, hits: list[Hit], answer: str, *, reference: str | None = None,
           answerable: bool = True) -> str:
    """The prompt for one answer: the template's ``{question}``, ``{passages}``, ``{answer}``, ``{reference}`` and
    ``{answerable_note}`` filled in (the rest of the template, JSON braces included, is kept as it is)."""
    passages = "\n\n".join(f"[{n}] ({h.chunk.source}) {(h.chunk.text or '')[:PASSAGE_CHARS]}"
                           for n, h in enumerate(hits, 1)) or "(none were sent)"
    ref = (f"Reference answer, written by a person (the answer need not match its wording):\n{reference}\n\n"
           if reference else "")
    fill = {"{question}": question, "{passages}": passages, "{answer}": answer.strip() or "(empty)",
            "{reference}": ref, "{answerable_note}": "" if answerable else NOT_ANSWERABLE_NOTE}
    return re.sub("|".join(re.escape(k) for k in fill), lambda m: fill[m.group(0)], template)


_OBJECT = re.compile(r"\{[^{}]*\}", re.S)


def parse_grade(reply: str) -> dict:
    """``{"groundedness": int, "quality": int, "reason": str}`` from a judge's reply, or ``{"error": why}``.

    Robust to what models wrap JSON in: code fences, text around it, single quotes, scores written as
    ``"4"``, ``4.0`` or ``"4/5"``. A score outside 1-5 or a missing scale is an error (never guessed)."""
    text = (reply or "").strip()
    if not text:
        return {"error": "the judge's reply was empty"}
    candidates = _OBJECT.findall(text)
    for raw in reversed(candidates):        # the last object is the verdict when a model thinks aloud first
        obj = None
        for attempt in (raw, raw.replace("'", '"')):
            try:
                obj = json.loads(attempt)
                break
            except ValueError:
                continue
        if not isinstance(obj, dict):
            continue
        lower = {str(k).strip().lower(): v for k, v in obj.items()}
        if not all(s in lower for s in SCALES):
            continue
        out = {}
        for s in SCALES:
            m = re.match(r"^\s*([0-9]+(?:\.0+)?)\s*(?:/\s*5)?\s*$", str(lower[s]))
            if not m or not 1 <= float(m.group(1)) <= 5:
                return {"error": f"the judge gave {s} {lower[s]!r}, not a whole number from 1 to 5",
                        "reply": text[:300]}
            out[s] = int(float(m.group(1)))
        out["reason"] = " ".join(str(lower.get("reason", "")).split())[:300]
        return out
    return {"error": "the judge's reply has no JSON object with groundedness and quality", "reply": text[:300]}


@dataclass
class Judge:
    """A judge model and the endpoints it can be reached at (``available`` when there is one)."""

    model: str | None
    catalog: Catalog | None = None
    endpoints: list[str] = field(default_factory=list)
    status: str = ""
    template: str = ""
    health: HealthCache | None = None

    @property
    def available(self) -> bool:
        return bool(self.endpoints)

    def describe(self) -> dict:
        return {"model": self.model, "ran": self.available, "status": self.status}

    def grade(self, question: str, hits: list[Hit], answer: str, *, reference: str | None = None,
              answerable: bool = True) -> dict:
        """Grade one answer: the parsed grade plus ``endpoint`` and ``ms``, or ``{"error": why}``."""
        import time

        if not self.available:
            return {"error": self.status or "no judge"}
        prompt = render(self.template, question, hits, answer, reference=reference, answerable=answerable)
        spec = self.catalog.get_model(self.model)
        params = SamplingParams(temperature=0.0, max_tokens=JUDGE_MAX_TOKENS)
        errors = []
        for ep in list(self.endpoints):
            t0 = time.perf_counter()
            try:
                stream = make_client(self.catalog, ep, spec).open([{"role": "user", "content": prompt}], params)
                reply = "".join(stream)
            except LLMError as e:
                errors.append(f"{ep}: {redact(str(e), self.catalog.secrets())}")
                if isinstance(e, EndpointError) and not e.status:   # unreachable: not tried again this run
                    self.endpoints.remove(ep)
                    if not self.endpoints:
                        self.status = f"no judge ran: {self.model} could not be reached ({'; '.join(errors)})"
                continue
            grade = parse_grade(reply)
            grade.update(endpoint=ep, ms=round((time.perf_counter() - t0) * 1000, 1))
            return grade
        return {"error": "the judge could not be reached: " + "; ".join(errors)}


def open_judge(catalog: Catalog, model: str | None, *, health: HealthCache | None = None,
               template: str | None = None) -> Judge:
    """The judge ``model`` (a catalog id, alias or route) on the endpoints where it can answer now.

    ``model`` None, "" or "none": no judge. The embedded model is refused (InvalidInput). An endpoint is usable
    when its key variable is set and (for a local NIM) ``GET /models`` answers and lists the model."""
    if not model or str(model).strip().lower() == "none":
        return Judge(None, status="no judge ran: none configured (evaluation.judge_model is none)")
    from .catalog import ROUTES

    spec = catalog.model_for_route(model) if model in ROUTES else catalog.get_model(model)
    if spec.embedded:
        raise InvalidInput(f"{spec.id} is the small offline model and is never used as a judge: set "
                           "evaluation.judge_model (or --judge) to a NIM model, or none.")
    health = health or HEALTH
    usable, why = [], []
    for ep_name in catalog.endpoints_for(spec):
        ep = catalog.endpoint(ep_name)
        if ep.kind == "embedded":
            continue
        missing = catalog.key_missing(ep)
        if missing:
            why.append(f"{ep_name}: {missing} is not set")
            continue
        ok, reason, served = probe(ep, catalog, health)
        if not ok:
            why.append(f"{ep_name}: down ({reason})")
            continue
        if ep.kind == "local_nim" and served and spec.serves.get(ep_name) not in served:
            why.append(f"{ep_name}: serves {', '.join(sorted(served))}, not {spec.serves.get(ep_name)}")
            continue
        usable.append(ep_name)
    if not usable:
        detail = "; ".join(why) or "the catalog lists no endpoint for it"
        return Judge(spec.id, catalog, [], f"no judge ran: {spec.id} has no usable endpoint ({detail})")
    return Judge(spec.id, catalog, usable, f"judged by {spec.id} via {usable[0]}",
                 template if template is not None else load_prompt(), health)


__all__ = ["Judge", "open_judge", "parse_grade", "render", "load_prompt", "DEFAULT_JUDGE", "PROMPT_FILE", "SCALES"]
