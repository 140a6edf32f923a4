"""hybrid-rag benchmarks, every figure beside its baseline from the same run.

Retrieval latency at scale, index build and memory, dense recall against latency, ingest throughput, nDCG
of the faster embedders, adding a document, TTFT overhead, concurrent users, the GPU paths and the embedded
model's first token on the starter collection, quiet and during an upload (bench/offline.py), and an idle
server's CPU use (bench/idle.py). Prints
markdown tables (what docs/benchmarks.md quotes) and writes JSON with the command and the machine.

    python -m bench                                  # 10k, 100k and 1M chunks, every section (long)
    python -m bench --sizes 10000,100000 --queries 200
    python -m bench --quick                          # tiny sizes, a smoke run (used by tests/test_bench.py)

Every speed or memory figure is printed beside its baseline from the same run, as percentiles and ratios.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("query_embedding", "dense_variants", "retrieval", "ingest", "ndcg", "add_one", "ttft", "concurrency",
            "gpu", "offline", "idle")
log = logging.getLogger("bench")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="chunk counts, comma-separated")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few queries: a smoke run")
    ap.add_argument("--queries", type=int, default=200, help="SciFact claims used as queries")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"any of {','.join(SECTIONS)}")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "bench.json"))
    ap.add_argument("--data-dir", default=None, help="where the collections are built (default: a temp dir, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir (and its cached reference vectors)")
    ap.add_argument("--reuse-collections", action="store_true",
                    help="retrieval: search a bench-N collection an earlier --keep run left in --data-dir instead of "
                         "building it again (no build timings then)")
    ap.add_argument("--scifact", default=None,
                    help="BEIR SciFact folder (default: shared/eval/scifact beside the repository, else the test sample)")
    ap.add_argument("--embed-chunks", type=int, default=384, help="chunks per set in the ingest throughput run")
    ap.add_argument("--embed-rounds", type=int, default=1,
                    help="ingest throughput: runs of every path, in alternating order (the mean is reported)")
    ap.add_argument("--dense-variants-size", type=int, default=100_000)
    ap.add_argument("--recall-target", type=float, default=0.95, help="recall@10 at which approximate meets exact")
    ap.add_argument("--hnsw", action=argparse.BooleanOptionalAction, default=True,
                    help="include HNSW-SQ8 in dense_variants (its build is slow on few cores)")
    ap.add_argument("--users", default="10,50")
    ap.add_argument("--rank-bm25-bound", type=float, default=120.0, help="seconds rank-bm25 may take per size")
    ap.add_argument("--rank-bm25-queries", type=int, default=20)
    ap.add_argument("--bm25s-build-max", type=int, default=1_000_000,
                    help="largest size at which bm25s' own index builder is timed")
    ap.add_argument("--ttft-n", type=int, default=50)
    ap.add_argument("--offline-n", type=int, default=12, help="questions per configuration in the offline section")
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
        args.embed_chunks = min(args.embed_chunks, 8)
        args.dense_variants_size = min(args.dense_variants_size, 3000)
        args.users = [min(u, 4) for u in args.users][:1]
        args.ttft_n = min(args.ttft_n, 5)
        args.offline_n = min(args.offline_n, 2)
        args.rank_bm25_queries = min(args.rank_bm25_queries, 5)
    return args


def _quiet_logs() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for ours in ("bench", "rag", "ingest"):
        logging.getLogger(ours).setLevel(logging.INFO)
    for noisy in ("httpx", "faiss", "sentence_transformers", "bm25s", "numba", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _jsonable(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _dump(report: dict) -> str:
    """The report as JSON, with the home folder written as ~ (no user paths in shared results)."""
    text = json.dumps(report, indent=1, default=_jsonable)
    home = str(Path.home())
    return text.replace(home, "~") if len(home) > 1 else text


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_logs()

    from rag.config import load_settings

    from . import data as bdata
    from . import embedding as bembed
    from .common import machine
    from .table import render

    tmp = None
    if args.data_dir:
        data_dir = Path(args.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="hybrid-rag-bench-")
        data_dir = Path(tmp)
    settings = load_settings(data_dir=data_dir)
    cache = settings.data_dir / "bench-cache"
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    report: dict = {"command": command.strip(), "machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "settings": {k: getattr(settings, k).model_dump() for k in ("retrieval", "dense", "sparse",
                                                                                 "chunking")}
                    | {"embedder_backend": settings.embedder.backend},
                    "synthesis": bdata.__doc__, "sections": {}}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out_path.write_text(_dump(report))

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
        scifact, found = bdata.find_scifact(args.scifact)
        docs = bdata.load_corpus(scifact, limit=60 if args.quick else None)
        qtexts = [q["text"] for q in bdata.load_queries(scifact)][: args.queries]
        qtexts = qtexts or [bdata.doc_text(d)[:120] for d in docs[: args.queries]]
        report["scifact"] = {"found": found, "documents": len(docs), "queries": len(qtexts)}
        embedder = bembed.local_embedder("auto", settings)  # the configured backend

        @functools.cache
        def reference():  # torch vectors of the documents: computed here, once, when a section needs them
            vecs, info = bdata.reference_vectors(docs, cache)
            report["scifact"]["reference_vectors"] = info
            return vecs, info

        @functools.cache
        def synth_and_queries():
            return bdata.Synth(docs, reference()[0]), embedder.encode_queries(qtexts)

        section("query_embedding", lambda: bembed.query_latency(qtexts, settings))

        def dense_variants():
            from .dense import variants

            synth, q_vecs = synth_and_queries()
            return variants(synth.vectors(args.dense_variants_size), q_vecs, settings, cache / "dense-variants",
                            settings.retrieval.depth, args.recall_target, hnsw=args.hnsw)

        section("dense_variants", dense_variants)

        built: list[int] = []
        if "retrieval" in args.sections:
            from .retrieval import run_size

            def one_size(n, prev_rank):
                synth, q_vecs = synth_and_queries()
                return run_size(n, synth, qtexts, q_vecs, settings, args, embedder, prev_rank)

            prev_rank = None
            for n in args.sizes:
                res = section(f"retrieval_{n}", lambda n=n, p=prev_rank: one_size(n, p), gate="retrieval")
                if isinstance(res, dict) and "build" in res:
                    built.append(n)
                    prev_rank = res["sparse"]["rank_bm25"]
                if n >= 500_000 and not args.keep:
                    shutil.rmtree(data_dir / "collections" / f"bench-{n}", ignore_errors=True)

        section("ingest", lambda: bembed.throughput(docs, args.embed_chunks, settings, args.embed_rounds))

        def ndcg():
            from .ndcg import ndcg as run

            return run(scifact, docs, reference(), settings, cache)

        section("ndcg", ndcg)

        def add_one():
            from .ingest import add_one_document

            kept = [n for n in built if n < 500_000 or args.keep]
            if not kept:
                return {"skipped": "no collection was built (the retrieval section did not run)"}
            n = min(kept, key=lambda s: abs(s - 100_000))
            return {"collection_chunks": n, **add_one_document(f"bench-{n}", settings, embedder, docs)}

        section("add_one", add_one)
        section("ttft", lambda: _ttft(args, data_dir))

        def concurrency():
            from rag.retrieve import Retriever
            from rag.store import open_collection

            from . import concurrency as conc

            small = [n for n in built if n < 500_000]
            if not small:
                return {"skipped": "no collection was built (the retrieval section did not run)"}
            r = Retriever(open_collection(f"bench-{small[-1]}", settings), embedder, settings.retrieval)
            return {"collection_chunks": small[-1], "embedder": getattr(embedder, "backend", "torch"),
                    **conc.run(r, qtexts, users=args.users, turns=2 if args.quick else 3)}

        section("concurrency", concurrency)
        section("gpu", lambda: _gpu(args))

        def offline():
            from . import offline as off

            return off.run(args.offline_n, searches=2 if args.quick else 5, upload_mb=1.0 if args.quick else 8.0,
                           quick=args.quick)

        section("offline", offline)

        def idle():
            from . import idle as idl

            if args.quick:
                return idl.run(seconds=2.0, windows=1, settle_s=1.0, browser=False)
            return idl.run()

        section("idle", idle)
    finally:
        report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        report["machine"]["load_avg_at_end"] = [round(v, 2) for v in os.getloadavg()]
        save()
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(render(report))
    print(f"\nwrote {out_path}")
    return 0


def _ttft(args, data_dir: Path) -> dict:
    from . import ttft

    out = data_dir / "ttft.json"
    argv = ["--n", str(args.ttft_n), "--out", str(out)]
    if args.quick:
        argv += ["--no-router", "--warmup", "1"]
    with contextlib.redirect_stdout(io.StringIO()):  # its own table; the figures go in ours
        rc = ttft.main(argv)
    return json.loads(out.read_text()) | {"rc": rc}


def _gpu(args) -> dict:
    """FAISS on the GPU (exact and IVF-SQ8) and GPU embedding, each against the CPU in the same run
    (bench/gpu.py, which also runs on its own: ``python -m bench.gpu``)."""
    import torch

    from rag.dense import gpu_count
    from rag.embed import packaged_minilm_path

    from . import gpu

    cuda = torch.cuda.is_available()
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


if __name__ == "__main__":
    raise SystemExit(main())
