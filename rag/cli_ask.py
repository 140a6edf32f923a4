"""`hybrid-rag ask`: retrieve, stream the answer to the terminal, then print the sources and the metadata.

Wired into rag/cli.py as the ``ask`` subcommand (``add_arguments`` + ``run``); the answer comes from
:meth:`rag.engine.Engine.ask`, the same path as the web app's. Errors become one-line messages in
``rag.cli.main``; the exit status is 0 for an answer, 1 for a partial one, 2 for errors.
"""
from __future__ import annotations

import argparse
import json
import sys

from .answer import Done, Sources, Token
from .catalog import ROUTES

_ROUTE_CHOICES = ("auto", *ROUTES)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", nargs="+", help="the question (quote it, or pass several words)")
    parser.add_argument("-c", "--collection", required=True, help="collection to search")
    parser.add_argument("--route", choices=_ROUTE_CHOICES, default="auto",
                        help="auto (default: the router picks per query), speed, quality or openusd")
    parser.add_argument("--model", help="a model id or alias from configs/models.yaml (overrides --route)")
    parser.add_argument("--mode", choices=("sparse", "dense", "hybrid"), help="retrieval mode (default: settings)")
    parser.add_argument("-k", type=int, help="chunks to retrieve (default: settings)")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-p", type=float, dest="top_p")
    parser.add_argument("--max-tokens", type=int, dest="max_tokens")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--stop", action="append", help="stop sequence (repeatable)")
    parser.add_argument("--frequency-penalty", type=float, dest="frequency_penalty")
    parser.add_argument("--presence-penalty", type=float, dest="presence_penalty")
    parser.add_argument("--json", action="store_true", help="print the metadata as JSON")


def _params(args) -> dict:
    keys = ("temperature", "top_p", "max_tokens", "seed", "stop", "frequency_penalty", "presence_penalty")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _where(hit) -> str:
    c = hit.chunk
    title = (c.title[:70] + "...") if c.title and len(c.title) > 73 else c.title
    parts = [f"{title} ({c.source})" if title else c.source]
    if c.page is not None:
        parts.append(f"p. {c.page}")
    if c.heading:
        parts.append(c.heading)
    return ", ".join(parts)


def print_meta(meta: dict, out=sys.stdout) -> None:
    ep = meta["endpoint"]
    out.write(f"model:     {meta['model_name']} ({meta['model']}) via {ep['name']} [{ep['kind']}]"
              + (f" {ep['base_url']}" if ep.get("base_url") else "") + "\n")
    out.write(f"route:     {meta['route']} ({meta['mode']}): {meta['reason']}\n")
    for f in meta["fallbacks"]:
        out.write(f"fallback:  {f['endpoint']} / {f['model']}: {f['reason']}\n")

    def ms(v):
        return "-" if v is None else f"{v:.0f} ms"

    tps = "-" if meta["tokens_per_s"] is None else f"{meta['tokens_per_s']:.1f} tok/s"
    out.write(f"timing:    retrieval {ms(meta['retrieval_ms'])}, first token {ms(meta['ttft_ms'])}, "
              f"total {ms(meta['total_ms'])}, {tps}\n")
    usage = "" if meta["usage_source"] == "server" else " (estimated)"
    out.write(f"tokens:    prompt {meta['prompt_tokens']}, completion {meta['completion_tokens']}{usage}\n")
    h = meta["history"]
    if meta["chunks_dropped"] or h["turns"] != h["kept"]:
        out.write(f"budget:    {meta['chunks_dropped']} chunk(s) left out; history kept {h['kept']}/{h['turns']} "
                  f"turns, condensed {h['condensed']}, dropped {h['dropped']}\n")


def run(args) -> int:
    from .config import load_settings
    from .engine import Engine, Retrieved

    question = " ".join(args.question).strip()
    engine = Engine(load_settings(args.config, data_dir=args.data_dir))
    out = sys.stdout
    events = engine.ask(question, collection=args.collection, route=args.route, model=args.model,
                        params=_params(args), mode=args.mode, k=args.k)  # bad input raises here, before output
    sources, meta = [], None
    try:
        for ev in events:
            if isinstance(ev, Retrieved) and not ev.result.hits:
                out.write("(the collection returned no passages for this question)\n")
            elif isinstance(ev, Sources):
                sources = ev.hits
            elif isinstance(ev, Token):
                out.write(ev.text)
                out.flush()
            elif isinstance(ev, Done):
                meta = ev.meta
    except KeyboardInterrupt:
        print("\n[interrupted]", file=sys.stderr)
        return 130
    out.write("\n")
    if meta["partial"]:
        out.write(f"\n[answer incomplete: {meta['error']}]\n")
    if meta["embedded"]:
        out.write(f"\nNOTE: {meta['warning']}\n")
    used = set(meta["citations"]["used"])
    out.write("\nSources:\n")
    for i, hit in enumerate(sources, 1):
        mark = "*" if i in used else " "
        out.write(f" {mark}[{i}] {_where(hit)}  ({hit.chunk.id}, score {hit.score:.3f})\n")
    if not sources:
        out.write("  (none: the collection returned no chunks)\n")
    if meta["citations"]["unknown"]:
        out.write(f"  warning: the answer cites sources that do not exist: {meta['citations']['unknown']}\n")
    out.write("\n")
    print_meta(meta, out)
    if args.json:
        out.write(json.dumps(meta, default=str) + "\n")
    return 1 if meta["partial"] else 0


__all__ = ["add_arguments", "run", "print_meta"]
