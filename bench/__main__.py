"""hybrid-rag benchmarks: retrieval latency at scale, index build and memory, ingest throughput,
TTFT overhead, concurrent users and the GPU paths. Prints a table and writes JSON.

    python -m bench                                  # 10k, 100k and 1M chunks (long: see docs/benchmarks.md)
    python -m bench --sizes 10000,100000 --queries 200
    python -m bench --quick                          # tiny sizes, a smoke run (used by tests/test_bench.py)

Every speed or memory figure is printed beside its baseline from the same run.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("query_embedding", "dense_variants", "retrieval", "ingest", "ndcg", "add_one", "ttft", "concurrency",
            "gpu")
log = logging.getLogger("bench")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="chunk counts, comma-separated")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few queries: a smoke run")
    ap.add_argument("--queries", type=int, default=200, help="SciFact claims used as queries")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"any of {','.join(SECTIONS)}")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "bench.json"))
    ap.add_argument("--data-dir", default=None, help="where the collections are built (default: a temp dir, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir")
    ap.add_argument("--scifact", default=None, help="BEIR SciFact folder (default: shared/eval/scifact)")
    ap.add_argument("--embed-chunks", type=int, default=384, help="chunks for the ingest throughput run")
    ap.add_argument("--dense-variants-size", type=int, default=100_000)
    ap.add_argument("--users", default="10,50")
    ap.add_argument("--rank-bm25-bound", type=float, default=120.0, help="seconds rank-bm25 may take per size")
    ap.add_argument("--rank-bm25-queries", type=int, default=20)
    ap.add_argument("--bm25s-build-max", type=int, default=1_000_000,
                    help="largest size at which bm25s' own index builder is timed")
    ap.add_argument("--ttft-n", type=int, default=50)
    args = ap.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {', '.join(bad)}: use {', '.join(SECTIONS)}")
    args.users = [int(u) for u in args.users.split(",") if u.strip()]
    if args.quick:
        args.sizes = [s for s in args.sizes if s <= 3000] or [2000]
        args.queries = min(args.queries, 12)
        args.embed_chunks = min(args.embed_chunks, 16)
        args.dense_variants_size = min(args.dense_variants_size, 3000)
        args.users = [min(u, 4) for u in args.users][:1]
        args.ttft_n = min(args.ttft_n, 5)
        args.rank_bm25_queries = min(args.rank_bm25_queries, 5)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for ours in ("bench", "rag", "ingest"):
        logging.getLogger(ours).setLevel(logging.INFO)
    for noisy in ("httpx", "faiss", "sentence_transformers", "bm25s", "numba", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from rag.config import load_settings

    from . import data as bdata
    from .common import machine

    tmp = None
    if args.data_dir:
        data_dir = Path(args.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="hybrid-rag-bench-")
        data_dir = Path(tmp)
    settings = load_settings(data_dir=data_dir)
    cache_dir = data_dir / "models"
    report: dict = {"command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "settings": {"retrieval": settings.retrieval.model_dump(), "dense": settings.dense.model_dump(),
                                 "sparse": settings.sparse.model_dump(), "embedder_backend": settings.embedder.backend},
                    "synthesis": bdata.__doc__, "sections": {}}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out_path.write_text(json.dumps(report, indent=1, default=_jsonable))

    def section(name, fn, gate=None):
        if (gate or name) not in args.sections:
            return None
        log.info("== %s", name)
        t = time.perf_counter()
        try:
            res = fn()
        except Exception as e:  # one failed section must not lose the others
            log.error("section %s failed: %s", name, traceback.format_exc())
            res = {"error": f"{type(e).__name__}: {e}"}
        if isinstance(res, dict):
            res.setdefault("section_s", round(time.perf_counter() - t, 1))
        report["sections"][name] = res
        save()
        return res

    try:
        scifact = bdata.find_scifact(args.scifact)
        docs = bdata.load_corpus(scifact, limit=60 if args.quick else None)
        queries_all = bdata.load_queries(scifact) if (scifact / "queries.jsonl").exists() else []
        report["scifact"] = {"dir": str(scifact), "documents": len(docs)}
        from rag.embed import get_embedder

        embedder = get_embedder("local", backend=settings.embedder.backend, cache_dir=cache_dir)
        fast = get_embedder("local", backend="auto", cache_dir=cache_dir)
        doc_vecs = bdata.lead_vectors(docs) if not args.quick else None
        if doc_vecs is None:
            doc_vecs = bdata.embed_corpus(docs, fast, cache_dir)
            report["scifact"]["doc_vectors"] = f"embedded here ({getattr(fast, 'backend', 'torch')})"
        else:
            report["scifact"]["doc_vectors"] = "torch all-MiniLM-L6-v2 vectors from /tmp/exp (precomputed)"
        qtexts = [q["text"] for q in queries_all][: args.queries] or [bdata.doc_text(d)[:120] for d in docs[: args.queries]]
        q_vecs = embedder.encode_queries(qtexts)
        synth = bdata.Synth(docs, doc_vecs)
        report["scifact"]["passages"] = len(synth.passages)

        section("query_embedding", lambda: _query_embedding(qtexts, cache_dir))

        section("dense_variants", lambda: _dense_variants(synth, q_vecs, settings, args.dense_variants_size))

        retrieval: dict = {}
        if "retrieval" in args.sections:
            from .retrieval import run_size

            args.embedder = get_embedder("local", backend="auto", cache_dir=cache_dir)
            prev_rank = None
            for n in args.sizes:
                res = section(f"retrieval_{n}", lambda: run_size(n, synth, qtexts, q_vecs, settings, data_dir,
                                                                 args, prev_rank), gate="retrieval")
                retrieval[n] = res
                if isinstance(res, dict) and "sparse" in res:
                    prev_rank = res["sparse"].get("rank_bm25")
                if n >= 500_000 and not args.keep:
                    shutil.rmtree(data_dir / "collections" / f"bench-{n}", ignore_errors=True)

        from . import ingest as bingest

        section("ingest", lambda: bingest.throughput(docs, args.embed_chunks, cache_dir))
        if not args.quick:
            section("ndcg", lambda: bingest.ndcg(scifact, docs, doc_vecs, data_dir, cache_dir, settings))

        def add_one():
            built = sorted(n for n, r in retrieval.items() if isinstance(r, dict) and "build" in r)
            if not built:
                return {"skipped": "no collection was built (the retrieval section did not run)"}
            n = min(built, key=lambda s: abs(s - 100_000))
            return {"collection_chunks": n, **bingest.add_one_document(f"bench-{n}", data_dir, settings, fast, docs)}

        section("add_one", add_one)
        section("ttft", lambda: _ttft(args, data_dir))

        def concurrency():
            from rag.retrieve import Retriever
            from rag.store import open_collection

            from . import concurrency as conc

            built = sorted(n for n, r in retrieval.items() if isinstance(r, dict) and "build" in r and n < 500_000)
            if not built:
                return {"skipped": "no collection was built (the retrieval section did not run)"}
            col = open_collection(f"bench-{built[-1]}", data_dir)
            r = Retriever(col, fast, settings.retrieval)
            return {"collection_chunks": built[-1], "embedder": getattr(fast, "backend", "torch"),
                    **conc.run(r, qtexts, users=args.users, turns=2 if args.quick else 3)}

        section("concurrency", concurrency)
        section("gpu", lambda: _gpu(args))
    finally:
        report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        save()
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(render(report))
    print(f"\nwrote {out_path}")
    return 0


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _query_embedding(qtexts, cache_dir) -> dict:
    """One query embedded at a time, as the app does: torch (sentence-transformers) vs ONNX backends."""
    from rag.embed import BACKENDS, get_embedder, onnx_available

    from .common import summary, timed

    out = {}
    for b in [b for b in BACKENDS if b != "auto"]:
        if b.startswith("onnx") and not onnx_available():
            out[b] = {"skipped": "onnxruntime is not installed"}
            continue
        e = get_embedder("local", backend=b, cache_dir=cache_dir)
        out[b] = summary(timed(lambda q: e.encode_queries([q]), qtexts))
    if "p50_ms" in out.get("onnx-int8", {}):
        out["x_faster_int8_vs_torch_p50"] = round(out["torch"]["p50_ms"] / out["onnx-int8"]["p50_ms"], 2)
    return out


def _dense_variants(synth, q_vecs, settings, n) -> dict:
    from .retrieval import dense_variants

    vecs = synth.vectors(n)
    return dense_variants(vecs, q_vecs, settings, storages=("flat", "fp16", "sq8"), kinds=("ivf",)) | {
        k: v for k, v in dense_variants(vecs, q_vecs, settings, storages=("sq8",), kinds=("hnsw",)).items()
        if k.startswith("hnsw")}


def _ttft(args, data_dir) -> dict:
    if not (REPO / "bench" / "ttft.py").exists():
        return {"skipped": "bench/ttft.py does not exist yet"}
    from . import ttft

    out = data_dir / "ttft.json"
    argv = ["--n", str(args.ttft_n), "--out", str(out)]
    if args.quick:
        argv += ["--no-router", "--warmup", "1"]
    rc = ttft.main(argv)
    res = json.loads(out.read_text())
    res["rc"] = rc
    return res


def _gpu(args) -> dict:
    """FAISS on the GPU (exact and IVF-SQ8) and GPU embedding, each against the CPU in the same run
    (bench/gpu.py, which also runs on its own: ``python -m bench.gpu``)."""
    from rag.dense import gpu_count
    from rag.embed import packaged_minilm_path

    from . import gpu

    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    out = {"faiss_gpus": gpu_count(), "torch_cuda": cuda}
    if not gpu_count() and not cuda:
        out["skipped"] = ("no GPU on this machine: faiss.get_num_gpus() == 0 and torch.cuda.is_available() is "
                          "False. The code paths exist (DenseIndex use_gpu=auto, embedder device cuda) and "
                          "tests/test_dense.py::test_gpu_exact_search_matches_cpu runs where one is.")
        return out
    if gpu_count():
        out["faiss"] = gpu.faiss_section(min(max(args.sizes), 1_000_000), max(args.queries, 200), 256)
    if cuda:
        out["embedding"] = gpu.embedding_section(str(packaged_minilm_path()), 2048)
    return out


# -- the table ------------------------------------------------------------------------------------

def _f(x, nd=2):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def render(report: dict) -> str:
    S = report["sections"]
    lines = [f"machine: {report['machine'].get('cpu', '?')}, {report['machine'].get('cpus')} CPUs, "
             f"load at start {report['machine'].get('load_avg_at_start')}", f"command: {report['command']}", ""]
    qe = S.get("query_embedding")
    if isinstance(qe, dict):
        lines.append("query embedding (one query)      p50 ms   p95 ms")
        for b, r in qe.items():
            if isinstance(r, dict) and "p50_ms" in r:
                lines.append(f"  {b:<30} {_f(r['p50_ms']):>7}  {_f(r['p95_ms']):>7}")
        lines.append("")
    dv = S.get("dense_variants")
    if isinstance(dv, dict) and "exact" in dv:
        lines.append(f"dense index variants at {dv['size']} vectors   p50 ms  p95 ms  recall@10  B/vector  build s")
        for k, r in dv.items():
            if isinstance(r, dict) and "p50_ms" in r:
                lines.append(f"  {k:<36} {_f(r['p50_ms']):>7} {_f(r['p95_ms']):>7} {_f(r.get('recall@10', 1.0), 3):>9} "
                             f"{_f(r.get('bytes_per_vector'), 0):>9} {_f(r.get('build_s')):>8}")
        lines.append("")
    sizes = [k for k in S if k.startswith("retrieval_")]
    if sizes:
        lines.append("retrieval latency (ms, p50/p95; query embedding excluded unless marked +embed)")
        hdr = f"  {'':<44}" + "".join(f"{k.split('_')[1]:>20}" for k in sizes)
        lines.append(hdr)

        def row(label, get):
            vals = []
            for k in sizes:
                try:
                    r = get(S[k])
                    vals.append(f"{_f(r['p50_ms'])}/{_f(r['p95_ms'])}" if "p50_ms" in r else r.get("skipped", "-")[:18])
                except Exception:
                    vals.append("-")
            lines.append(f"  {label:<44}" + "".join(f"{v:>20}" for v in vals))

        row("sparse: ours (numba top-k)", lambda r: r["sparse"]["ours"])
        row("sparse: bm25s numpy scorer (baseline)", lambda r: r["sparse"]["bm25s_numpy"])
        row("sparse: rank-bm25 BM25Okapi (baseline)", lambda r: r["sparse"]["rank_bm25"])
        row("dense: store index (see kind)", lambda r: r["dense"]["index"])
        row("dense: exact IndexFlatIP (baseline)", lambda r: r["dense"]["exact"])
        row("retriever sparse", lambda r: r["retriever"]["sparse"])
        row("retriever dense", lambda r: r["retriever"]["dense"])
        row("retriever hybrid", lambda r: r["retriever"]["hybrid"])
        row("retriever hybrid, baseline indexes", lambda r: r["retriever"]["hybrid_baseline(numpy bm25s + exact)"])
        row("retriever hybrid +embed (onnx-int8)", lambda r: next(v for k, v in r["retriever"].items() if k.startswith("hybrid+embed")))

        def plain(label, get):
            vals = []
            for k in sizes:
                try:
                    vals.append(_f(get(S[k])))
                except Exception:
                    vals.append("-")
            lines.append(f"  {label:<44}" + "".join(f"{v:>20}" for v in vals))

        plain("dense index kind", lambda r: r["dense_kind"])
        plain("dense recall@10 vs exact", lambda r: r["dense"]["recall@10_vs_exact"])
        plain("sparse top-10 scores = numpy scorer's", lambda r: r["sparse"]["same_top10_scores_as_numpy"])
        plain("build: store commit total s", lambda r: r["build"]["total_s"])
        plain("build: tokenise s", lambda r: r["build"].get("tokenise"))
        plain("build: sparse from ids, ours s", lambda r: r["build"].get("ours_sparse_from_ids_s"))
        plain("build: sparse from ids, bm25s.index s", lambda r: r["build"].get("bm25s_index_from_ids_s"))
        plain("build: dense (store) s", lambda r: r["build"].get("dense"))
        plain("build: exact flat s", lambda r: r["build"].get("exact_flat_build_s"))
        plain("build: rank-bm25 s", lambda r: r["sparse"]["rank_bm25"].get("build_s"))
        plain("memory: dense B/chunk", lambda r: r["memory"]["dense_index_B_per_chunk"])
        plain("memory: sparse B/chunk", lambda r: r["memory"]["sparse_index_B_per_chunk"])
        plain("memory: chunk store B/chunk", lambda r: r["memory"]["chunk_store_B_per_chunk"])
        plain("memory: total B/chunk", lambda r: r["memory"]["total_B_per_chunk"])
        plain("memory: resident (RSS) B/chunk", lambda r: r["memory"].get("resident_B_per_chunk"))
        lines.append("")
    ing = S.get("ingest")
    if isinstance(ing, dict) and "plain_loop" in ing:
        lines.append(f"ingest embedding throughput, {ing['chunks']} SciFact chunks   chunks/s  x plain loop  cosine")
        for k in ("plain_loop", "app_torch", "app_onnx", "app_onnx_int8"):
            if k in ing:
                lines.append(f"  {k:<52} {_f(ing[k]['chunks_per_s'], 1):>8} {_f(ing[k]['x_plain_loop']):>13} "
                             f"{_f(ing.get('cosine_to_plain', {}).get(k), 4):>7}")
        lines.append("")
    nd = S.get("ndcg")
    if isinstance(nd, dict) and "torch" in nd:
        lines.append("SciFact nDCG@10 (train, 809 queries)   dense    hybrid")
        for k in ("torch", "onnx-int8"):
            if k in nd:
                lines.append(f"  {k:<36} {_f(nd[k].get('dense'), 4):>7} {_f(nd[k].get('hybrid'), 4):>9}")
        lines.append("")
    ad = S.get("add_one")
    if isinstance(ad, dict) and "reuse_token_ids" in ad:
        lines.append(f"add one document to {ad['collection_chunks']} chunks (end to end, s)")
        for k in ("reuse_token_ids", "retokenise_all"):
            lines.append(f"  {k:<36} {_f(ad[k]['seconds']):>7}   phases {ad[k].get('commit_phases_s')}")
        lines.append("")
    tt = S.get("ttft")
    if isinstance(tt, dict) and "results" in tt:
        lines.append(f"TTFT overhead over a fake NIM ({tt.get('server_ttft_ms')} ms fixed)   p50 ms  p95 ms")
        for k, r in tt["results"].items():
            lines.append(f"  {k:<52} {_f(r['overhead_p50_ms']):>7} {_f(r['overhead_p95_ms']):>7}")
        lines.append("")
    cc = S.get("concurrency")
    if isinstance(cc, dict):
        if "skipped" in cc:
            lines.append(f"concurrency: skipped ({cc['skipped']})")
        else:
            lines.append("concurrent users (retrieval + answer)  requests errors  TTFT overhead p50/p95 ms: "
                         "with retrieval | answer() only")
            for k, r in cc.items():
                if k.endswith("_users"):
                    lines.append(f"  {k:<36} {r['requests']:>8} {r['errors']:>6}  {_f(r['overhead_p50_ms'], 1)}/"
                                 f"{_f(r['overhead_p95_ms'], 1)} | {_f(r.get('answer_overhead_p50_ms'), 1)}/"
                                 f"{_f(r.get('answer_overhead_p95_ms'), 1)}")
        lines.append("")
    g = S.get("gpu")
    if isinstance(g, dict):
        lines.append("gpu: " + (g.get("skipped") or json.dumps({k: v for k, v in g.items() if k != "section_s"})))
    errs = {k: v["error"] for k, v in S.items() if isinstance(v, dict) and "error" in v}
    for k, e in errs.items():
        lines.append(f"section {k} FAILED: {e}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
