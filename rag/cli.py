"""`hybrid-rag` command line: ingest, search, collections, eval, eval-answers, ask, serve, users, keys, audit."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from . import cli_answers, cli_ask, cli_users
from .errors import HybridRagError, InvalidInput, user_message

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _settings(args):
    from .config import load_settings

    return load_settings(path=args.config, data_dir=args.data_dir)


def cmd_ingest(args) -> int:
    from ingest.pipeline import ingest, iter_paths

    from .embed import make_embedder

    settings = _settings(args)
    flags = {k: v for k, v in (("chunk_tokens", args.chunk_tokens), ("overlap_tokens", args.overlap_tokens))
             if v is not None}
    if flags:
        from pydantic import ValidationError

        from .config import ChunkingSettings

        try:
            settings.chunking = ChunkingSettings(**{**settings.chunking.model_dump(), **flags})
        except ValidationError as e:
            raise InvalidInput(f"--chunk-tokens/--overlap-tokens: {e.errors()[0]['msg']}") from None
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        print(f"error: not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    files = list(iter_paths(args.paths))
    embedder = make_embedder(settings.embedder)
    t0 = time.perf_counter()
    last = [0.0]

    def progress(frac, msg):
        if not args.quiet and (time.perf_counter() - last[0] > 1 or frac >= 1):
            last[0] = time.perf_counter()
            print(f"\r[{frac * 100:5.1f}%] {msg[:70]:<70}", end="", file=sys.stderr, flush=True)

    results = ingest(args.collection, files, settings=settings, embedder=embedder, progress=progress)
    if not args.quiet:
        print(file=sys.stderr)
    failed = [r for r in results if not r.ok]
    for r in results:
        line = f"{r.status:<9} {r.name}: {r.chunks} chunks" + (f", {r.documents} documents" if r.documents > 1 else "")
        print(line if r.ok else f"failed    {r.error}")
    chunks = sum(r.chunks for r in results)
    print(f"{len(results) - len(failed)} of {len(results)} files ingested, {chunks} chunks added "
          f"to '{args.collection}' in {time.perf_counter() - t0:.1f}s")
    return 1 if failed and len(failed) == len(results) else 0


def _print_hit(i, h):
    c = h.chunk
    where = f" p.{c.page}" if c.page else (f" §{c.heading}" if c.heading else "")
    d = f"{h.dense_rank}" if h.dense_rank else "-"
    s = f"{h.sparse_rank}" if h.sparse_rank else "-"
    name = c.source if c.doc_id in (c.source, "") else f"{c.source} [{c.doc_id}]"
    title = f" {c.title!r}" if c.title else ""
    print(f"[{i}] {h.score:.4f}  {name}{where}{title}  (dense #{d}, sparse #{s})")
    snippet = " ".join(c.text.split())[:240]
    print(f"    {snippet}")


def cmd_search(args) -> int:
    from .engine import Engine

    res, rerank = Engine(_settings(args)).search_reranked(args.collection, args.query, mode=args.mode, k=args.k)
    if args.json:
        print(json.dumps({
            "query": args.query, "mode": res.mode, "retrieval_ms": round(res.retrieval_ms, 2), "rerank": rerank,
            "hits": [{"rank": h.fused_rank, "score": h.score, "chunk_id": h.chunk.id, "doc_id": h.chunk.doc_id,
                      "source": h.chunk.source, "page": h.chunk.page, "heading": h.chunk.heading,
                      "start": h.chunk.start, "end": h.chunk.end, "text": h.chunk.text,
                      "dense_rank": h.dense_rank, "dense_score": h.dense_score,
                      "sparse_rank": h.sparse_rank, "sparse_score": h.sparse_score,
                      "rerank_rank": h.rerank_rank, "rerank_score": h.rerank_score} for h in res.hits]}))
        return 0
    if not res.hits:
        print("no results")
    for i, h in enumerate(res.hits, 1):
        _print_hit(i, h)
    print(f"({res.mode}, {res.retrieval_ms:.1f} ms)")
    if rerank is not None:
        print(rerank["reason"] or f"reranked by {rerank['model']} ({rerank['where']}, {rerank['ms']:.0f} ms)")
    return 0


def cmd_collections(args) -> int:
    from .store import delete_collection, list_collections

    settings = _settings(args)
    if args.delete:
        delete_collection(args.delete, settings)
        cli_users.forget_deleted_collection(args, args.delete)   # its rights go; audited
        print(f"deleted collection '{args.delete}'")
        return 0
    cols = list_collections(settings)
    if args.json:
        print(json.dumps(cols))
        return 0
    if not cols:
        print(f"no collections in {settings.data_dir} (create one with `hybrid-rag ingest --collection NAME FILES...`)")
    for c in cols:
        print(f"{c['name']:<24} {c['documents']:>7} docs {c['chunks']:>8} chunks  {c['backend']:<6}  {c['version']}  "
              f"{c['embedder']}")
    return 0


def cmd_migrate(args) -> int:
    """Copy a collection into the other backend (vectors and chunks as they are), verify the counts."""
    from .store import migrate, validate_name

    settings = _settings(args)
    new_name = validate_name(args.as_name or f"{args.collection}-{args.to}")
    t = time.perf_counter()
    counts = migrate(args.collection, settings, args.to, new_name)
    src, dst = counts["source"], counts["target"]
    print(f"copied {args.collection!r} to {new_name!r} ({args.to}) in {time.perf_counter() - t:.1f} s: "
          f"{dst['documents']} documents, {dst['chunks']} chunks (source: {src['documents']} documents, "
          f"{src['chunks']} chunks); the source is unchanged")
    return 0


def cmd_eval(args) -> int:
    """Retrieval evaluation: several configurations side by side on BEIR queries + qrels (see docs/evaluation.md)."""
    from .engine import Engine
    from .eval import (
        judged,
        load_qrels,
        load_queries,
        parse_configs,
        rerank_note,
        reranker_for,
        run_configs,
    )
    from .evalruns import save_run_files

    settings = _settings(args)
    if args.fusion:
        settings.retrieval.fusion = args.fusion
    configs = parse_configs(args.configs)  # bad names fail before anything loads
    reranker = reranker_for(configs, settings)  # and -rerank without a rerank endpoint
    engine = Engine(settings)
    if args.beir:
        from .evalset import ensure_collection, find_set

        beir = find_set(args.beir, args.split)
        name = args.collection or beir.name
        how = ensure_collection(name, beir.corpus, settings=settings, embedder=engine.embedder,
                                progress=None if args.quiet else _eval_ingest_progress)
        print(f"collection '{name}': {'reused (same corpus)' if how == 'reused' else 'ingested from ' + str(beir.corpus)}",
              file=sys.stderr)
        queries_path, qrels_path = beir.queries, beir.qrels
    else:
        missing = [f for f in ("collection", "queries", "qrels") if not getattr(args, f)]
        if missing:
            raise InvalidInput("eval needs --collection, --queries and --qrels (or --beir DIR): missing "
                               + ", ".join("--" + m for m in missing) + ".")
        name, queries_path, qrels_path = args.collection, args.queries, args.qrels
    qrels = load_qrels(qrels_path)
    queries = judged(load_queries(queries_path), qrels, args.limit)
    retriever = engine.retriever(name)

    def progress(config, i, n):
        if not args.quiet and (i % 100 == 0 or i == n):
            print(f"\r{config}: {i}/{n}", end="\n" if i == n else "", file=sys.stderr, flush=True)

    result = run_configs(retriever, queries, qrels, configs, progress=progress, reranker=reranker)
    if not args.quiet:
        print(file=sys.stderr)
    out = result.summary()
    width = max(8, *(len(n) for n in out))
    print(f"{'config':<{width}} {'nDCG@10':>8} {'R@10':>8} {'R@100':>8} {'MRR@10':>8} {'p50 ms*':>8} {'p95 ms*':>8}")
    for config, m in out.items():
        print(f"{config:<{width}} {m['ndcg@10']:>8.4f} {m['recall@10']:>8.4f} {m['recall@100']:>8.4f} "
              f"{m['mrr@10']:>8.4f} {m['p50_ms']:>8.1f} {m['p95_ms']:>8.1f}")
    print(f"{len(queries)} judged queries. * search time per query, query embedding excluded (queries are embedded "
          f"in one batch: {result.info['embed_ms_per_query']:.1f} ms per query)")
    for name, r in result.rerank.items():
        print(f"{name}: reranked {r['applied']} of {r['applied'] + r['fallbacks']} queries "
              f"({result.info['rerank']['model']}, first {result.info['rerank']['top_n']} chunks; rerank time included)")
    if rerank_note(result):
        print(rerank_note(result))
    if args.save_runs:
        paths = save_run_files(result, args.save_runs)
        print(f"run files: {', '.join(str(p) for p in paths)}")
    if args.json:
        print(json.dumps(out))
    return 0


def _eval_ingest_progress(frac, msg):
    print(f"\r[ingest {frac * 100:5.1f}%] {msg[:60]:<60}", end="\n" if frac >= 1 else "", file=sys.stderr, flush=True)


def cmd_bench(args) -> int:
    from bench.__main__ import main as bench_main

    return bench_main(args.bench_args) or 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid-rag", description="Hybrid (FAISS + BM25) RAG over your documents.")
    p.add_argument("--data-dir", help="data directory (default: $HYBRID_RAG_DATA, else data_dir in the settings: data/ under the "
                   "working directory)")
    p.add_argument("--config", help="settings file (default: configs/default.yaml)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", help="add files, folders or a BEIR corpus.jsonl(.gz) to a collection")
    s.add_argument("--collection", "-c", required=True)
    s.add_argument("--chunk-tokens", type=int, help="chunk size in embedder tokens (new collections only)")
    s.add_argument("--overlap-tokens", type=int, help="chunk overlap in embedder tokens (new collections only)")
    s.add_argument("--quiet", "-q", action="store_true")
    s.add_argument("paths", nargs="+")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("search", help="search a collection")
    s.add_argument("--collection", "-c", required=True)
    s.add_argument("--mode", choices=["sparse", "dense", "hybrid"])
    s.add_argument("--k", type=int, default=None)
    s.add_argument("--json", action="store_true")
    s.add_argument("query")
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("collections", help="list collections, or delete one; grant, revoke, public, owner, rights: "
                       "who may read and change them")
    s.add_argument("--delete", metavar="NAME")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_collections)
    cli_users.add_collection_subcommands(s)

    s = sub.add_parser("migrate", help="copy a collection into the other store backend (no re-embedding)")
    s.add_argument("collection")
    s.add_argument("--to", required=True, choices=["milvus", "files"], help="the target backend")
    s.add_argument("--as", dest="as_name", metavar="NAME", help="the copy's name (default: COLLECTION-BACKEND)")
    s.set_defaults(func=cmd_migrate)

    s = sub.add_parser("eval", help="evaluate retrieval on BEIR queries + qrels, several configurations side by side")
    s.add_argument("--collection", "-c", help="the collection to search (with --beir: the one to ingest into; "
                   "default: the folder's name)")
    s.add_argument("--queries", help="BEIR queries.jsonl")
    s.add_argument("--qrels", help="BEIR qrels.tsv (query-id, corpus-id, score)")
    s.add_argument("--beir", metavar="DIR", help="a BEIR folder (corpus.jsonl(.gz), queries.jsonl, qrels.tsv or "
                   "qrels/test.tsv): its corpus is ingested, or the collection reused if it holds the same corpus")
    s.add_argument("--split", help="with --beir: the judgements qrels/SPLIT.tsv (default: qrels.tsv, else qrels/test.tsv)")
    s.add_argument("--configs", "--modes", dest="configs", default="sparse,dense,hybrid",
                   help="comma-separated configurations, each MODE[-FUSION][-WDENSE-WSPARSE][-kK][-rerank]: sparse, "
                   "dense, hybrid (the settings' fusion), hybrid-rrf, hybrid-convex, hybrid-convex-0.5-0.5, hybrid-k50, "
                   "hybrid-rerank (the rerank NIM of rerank.*; needs rerank.base_url or the hosted key) "
                   "(default: sparse,dense,hybrid)")
    s.add_argument("--fusion", choices=["convex", "rrf"], help="the fusion of plain 'hybrid' (default: retrieval.fusion)")
    s.add_argument("--limit", type=int, help="only the first N judged queries")
    s.add_argument("--save-runs", metavar="DIR", help="write each configuration's top-100 documents per query as a "
                   "TREC run file DIR/<config>.run")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    s.add_argument("--json", action="store_true", help="print the metrics as one JSON object on the last line")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("eval-answers", help="answer a golden set with 1-4 models over the same passages and score "
                       "the answers (citations, support, refusals, a judge model); docs/evaluation.md")
    cli_answers.add_arguments(s)
    s.set_defaults(func=cli_answers.run)

    s = sub.add_parser("ask", help="ask a question; the answer streams, then sources and metadata")
    cli_ask.add_arguments(s)
    s.set_defaults(func=cli_ask.run)

    s = sub.add_parser("bench", help="run the benchmarks (same as python -m bench); --help for options",
                       add_help=False)
    s.add_argument("bench_args", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_bench)

    cli_users.add_keys_parser(sub)
    cli_users.add_users_parser(sub)
    cli_users.add_audit_parser(sub)

    s = sub.add_parser("serve", help="serve the web app and the HTTP API (/v1) on one port")
    serve_arguments(s)
    s.set_defaults(func=_serve)
    return p


def serve_arguments(parser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1; use 0.0.0.0 only behind a proxy you trust)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--no-starter", action="store_true",
                        help="do not ingest the project's docs into a starter collection on first run")


def _serve(args) -> int:
    from ui.serve import run  # gradio loads only for this command

    return run(args, _settings(args))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except HybridRagError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: a reference to the log, never a raw traceback on the terminal
        print(f"error: {user_message(e, f'hybrid-rag {args.command}')}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
