"""The printed report: markdown tables (what docs/benchmarks.md quotes), every row beside its baseline."""
from __future__ import annotations

import json


def f(x, nd=2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def pp(r: dict | None) -> str:
    """``p50 / p95`` of a timing row, or why there is none."""
    if not isinstance(r, dict):
        return "-"
    if "p50_ms" in r:
        return f"{f(r['p50_ms'])} / {f(r['p95_ms'])}"
    return str(r.get("skipped") or r.get("error") or "-")[:40]


def x(v, what: str) -> str:
    """`` (ours 1.9x faster)``-style note on a row; a ratio under 1 reads ``(ours 1.5x slower)``."""
    if v is None:
        return ""
    if v < 1 and v > 0 and "faster" in what:
        return f" ({what.replace('faster', 'slower').format(f(1 / v) + 'x')})"
    return f" ({what.format(f(v) + 'x')})"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _query_embedding(qe: dict) -> list[str]:
    rows = [[b, f(r["p50_ms"]), f(r["p95_ms"]), f(r.get("x_vs_torch_p50", 1.0 if b == "torch" else None))]
            for b, r in qe.items() if isinstance(r, dict) and "p50_ms" in r]
    return ["Query embedding, one query at a time (ms)", ""] + table(["backend", "p50", "p95", "x torch (p50)"], rows)


def _retrieval(S: dict, keys: list[str]) -> list[str]:
    sizes = [S[k] for k in keys]
    head = [""] + [f"{r.get('size', k.split('_')[1]):,}" if isinstance(r, dict) else k for r, k in zip(sizes, keys)]

    def row(label, fn):
        cells = []
        for r in sizes:
            try:
                cells.append(fn(r) if isinstance(r, dict) and "error" not in r else pp(r))
            except (KeyError, TypeError):
                cells.append("-")
        return [label] + cells

    emb = next((_get(r, "retriever", "hybrid+embed", "embedder") for r in sizes if isinstance(r, dict)), "?")
    q = next((r.get("queries") for r in sizes if isinstance(r, dict)), "?")
    depth = next((r.get("depth") for r in sizes if isinstance(r, dict)), "?")
    rb = next((_get(r, "sparse", "rank_bm25", "n") for r in sizes if _get(r, "sparse", "rank_bm25", "n")), "?")
    lat = [
        row(f"**hybrid + query embedding ({emb}), end to end**", lambda r: pp(r["retriever"]["hybrid+embed"])
            + x(r["retriever"]["hybrid+embed"].get("x_vs_previous_p50"), "{} faster than the previous path")),
        row("hybrid + query embedding, the previous query path (batch-path embedding, BM25 after the dense search, "
            "touched-rows BM25 only, the IVF-SQ8 index where the store now has pq)",
            lambda r: pp(r["retriever"]["hybrid+embed_previous"])),
        row("sparse-only mode, end to end (no query embedding)", lambda r: pp(r["retriever"]["sparse+embed"])
            + x(r["retriever"]["sparse+embed"].get("x_vs_previous_p50"), "{} faster than the previous path")),
        row("sparse-only mode, the previous path (embedded the query)",
            lambda r: pp(r["retriever"]["sparse+embed_previous"])),
        row("**hybrid search, this app**", lambda r: pp(r["retriever"]["hybrid"])
            + x(r["retriever"]["hybrid"].get("x_vs_baseline_p50"), "{} faster than baseline")),
        row("hybrid search, baseline indexes (bm25s numpy scorer + exact IndexFlatIP)",
            lambda r: pp(r["retriever"]["hybrid_baseline"])),
        row("sparse, this app (numba posting-list top-k)", lambda r: pp(r["sparse"]["ours"])),
        row("sparse, this app's kernel over touched rows only (every query's pass before)",
            lambda r: pp(r["sparse"]["ours_touched_only"])
            + x(r["sparse"]["ours_touched_only"].get("x_ours_faster_p50"), "ours {} faster")),
        row("sparse, bm25s numba backend (n_threads=1)", lambda r: pp(r["sparse"]["bm25s_numba"])
            + x(r["sparse"]["bm25s_numba"].get("x_ours_faster_p50"), "ours {} faster")),
        row("sparse, bm25s numpy backend", lambda r: pp(r["sparse"]["bm25s_numpy"])
            + x(r["sparse"]["bm25s_numpy"].get("x_ours_faster_p50"), "ours {} faster")),
        row(f"sparse, rank-bm25 BM25Okapi ({rb} queries)", lambda r: pp(r["sparse"]["rank_bm25"])
            + x(r["sparse"]["rank_bm25"].get("x_ours_faster_p50"), "ours {} faster")),
        row("dense, the store's index (see below)", lambda r: pp(r["dense"]["index"])
            + x(r["dense"]["index"].get("x_vs_exact_p50"), "{} faster than exact")),
        row("dense, the collection's search (index, then candidates ranked by stored vectors)",
            lambda r: pp(r["dense"]["collection"]) + f", recall@10 {r['dense']['collection']['recall@10_vs_exact']:.3f}"),
        row("dense, the same search over an IVF-SQ8 index (the previous default; interleaved with the pq one)",
            lambda r: (pp(r["dense"]["collection_sq8"]) + f", recall@10 {r['dense']['collection_sq8']['recall@10_vs_exact']:.3f}"
                       + f"; pq interleaved {pp(r['dense']['collection_interleaved'])}"
                       + x(r["dense"]["collection_sq8"].get("x_pq_faster_p50"), "pq {} faster"))
            if "collection_sq8" in r["dense"] else "-"),
        row("dense, exact IndexFlatIP", lambda r: pp(r["dense"]["exact"])),
        row("the store's dense index", lambda r: r["dense"]["index"]["label"]),
        row("sparse top-10 scores equal to bm25s'", lambda r: r["sparse"]["same_top10_scores_as_bm25s"]),
    ]
    build = [
        row("store commit, total s", lambda r: f(r["build"]["total_s"])),
        row("of which tokenising s", lambda r: f(r["build"].get("tokenise"))),
        row("of which dense index s", lambda r: f(r["build"].get("dense"))),
        row("BM25 matrix from token ids, ours s", lambda r: f(r["build"]["sparse"]["ours_from_ids_s"])),
        row("BM25 matrix from token ids, `bm25s.BM25.index` s",
            lambda r: f(r["build"]["sparse"]["bm25s_index_from_ids_s"])
            + x(r["build"]["sparse"].get("x_ours_faster"), "ours {} faster")),
        row("exact IndexFlatIP build s", lambda r: f(r["build"]["exact_flat_build_s"])),
        row("rank-bm25 build s", lambda r: f(r["sparse"]["rank_bm25"].get("build_s"))),
        row("dense index B/chunk", lambda r: f(r["memory"]["dense_index_B_per_chunk"], 0)),
        row("sparse index B/chunk", lambda r: f(r["memory"]["sparse_index_B_per_chunk"], 0)),
        row("chunk store (chunks.sqlite) B/chunk", lambda r: f(r["memory"]["chunk_store_B_per_chunk"], 0)),
        row("**total B/chunk (dense + sparse + chunk store)**", lambda r: f(r["memory"]["total_B_per_chunk"], 0)),
        row("resident growth of a fresh process that opens and searches, B/chunk",
            lambda r: f(r["memory"].get("resident_B_per_chunk"), 0)),
    ]
    return ([f"Retrieval latency (ms, p50 / p95; {q} SciFact claims one at a time, top {depth} per retriever; "
             "query embedding excluded unless marked)", ""] + table(head, lat)
            + ["", "Index build and memory", ""] + table(head, build))


def _dense_variants(dv: dict) -> list[str]:
    ex = dv["exact"]
    rows = [[ex["label"], "-", f(ex["p50_ms"]), f(ex["p95_ms"]), "1.000", "1.00", f(ex["bytes_per_vector"], 0),
             f(ex.get("build_s"), 1)]]
    best = []
    for name, v in dv.items():
        if not (isinstance(v, dict) and "curve" in v):
            continue
        hit = v["at_target"].get("setting")
        for c in v["curve"]:
            mark = " **←**" if c["setting"] == hit else ""
            rows.append([c["label"].split(" (")[0].rsplit(" ", 1)[0], c["setting"] + mark, f(c["p50_ms"]),
                         f(c["p95_ms"]), f(c["recall@10"], 3), f(c["x_vs_exact_p50"]), f(v["bytes_per_vector"], 0),
                         f(v["build_s"], 1)])
        t = v["at_target"]
        best.append(f"- {name}: " + (f"{t['setting']}, recall@10 {t['recall@10']:.3f}, p50 {f(t['p50_ms'])} ms: "
                                     f"**{f(t['x_vs_exact_p50'])}x** exact ({f(ex['p50_ms'])} ms)"
                                     if "setting" in t else f"does not reach {dv['recall_target']} ({t['not_reached']})"))
    return ([f"Dense search at {dv['size']:,} vectors, {dv['queries']} queries, top {dv['depth']}: recall@10 against "
             f"latency (ms); **←** = the smallest setting with recall@10 ≥ {dv['recall_target']}", ""]
            + table(["index", "setting", "p50", "p95", "recall@10", "x exact (p50)", "B/vector", "build s"], rows)
            + ["", f"At recall@10 ≥ {dv['recall_target']}:"] + best)


def _ingest(ing: dict) -> list[str]:
    out = [f"Ingest embedding throughput on the CPU; baseline: {ing['baseline']}", ""]
    for name, s in ing["sets"].items():
        if "skipped" in s:
            out += [f"{name}: skipped ({s['skipped']})", ""]
            continue
        rows = [[k, f(s[k]["chunks_per_s"], 1), f(s[k]["x_baseline"]), f(s[k]["mean_cosine_to_baseline"], 4)]
                for k in s if isinstance(s[k], dict) and "chunks_per_s" in s[k]]
        out += [f"{name}: {s['chunks']} chunks, tokens p50 {f(s['tokens_p50'], 0)} / p95 {f(s['tokens_p95'], 0)} / "
                f"max {s['tokens_max']}; baseline runs (first, last) {s['baseline_runs_s']} s", ""]
        out += table(["path", "chunks/s", "x baseline", "mean cosine to baseline"], rows) + [""]
    return out[:-1]


def _ndcg(nd: dict) -> list[str]:
    rows = []
    for k, v in nd.items():
        if isinstance(v, dict) and "hybrid" in v:
            d = v.get("delta_vs_torch", {})
            src = nd["vectors"].get(k, {}).get("source", "")
            rows.append([k, f(v["dense"], 4), f(v["hybrid"], 4), f(d.get("dense"), 4), f(d.get("hybrid"), 4), src])
    return ([f"SciFact nDCG@10 ({nd['documents']} documents, {nd['queries_judged']} judged queries), each "
             "backend embedding documents and queries", ""]
            + table(["embedder", "dense", "hybrid", "Δ dense vs torch", "Δ hybrid vs torch", "vectors"], rows))


def _scifact(s: dict) -> str:
    out = f"scifact: {s.get('found')}, {s.get('documents')} documents, {s.get('queries')} queries"
    ref = s.get("reference_vectors")
    if ref:
        secs = f", {ref['seconds']} s" if "seconds" in ref else ""
        out += f"; reference document vectors: {ref['backend']}, {ref['source']}{secs}"
    return out


def render(report: dict) -> str:
    S, m = report["sections"], report["machine"]
    v = m.get("versions", {})
    lines = [f"machine: {m.get('cpu', '?')}, {m.get('cpus')} CPUs ({m.get('cpus_usable', '?')} usable), "
             f"{m.get('mem_gib')} GiB, load average at start {m.get('load_avg_at_start')}, "
             f"at end {m.get('load_avg_at_end')}",
             "versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val), f"command: {report['command']}",
             _scifact(report.get("scifact") or {}), ""]
    if isinstance(S.get("query_embedding"), dict):
        lines += _query_embedding(S["query_embedding"]) + [""]
    sizes = [k for k in S if k.startswith("retrieval_")]
    if sizes:
        lines += _retrieval(S, sizes) + [""]
    if isinstance(S.get("dense_variants"), dict) and "exact" in S["dense_variants"]:
        lines += _dense_variants(S["dense_variants"]) + [""]
    if isinstance(S.get("ingest"), dict) and "sets" in S["ingest"]:
        lines += _ingest(S["ingest"]) + [""]
    if isinstance(S.get("ndcg"), dict) and "vectors" in S["ndcg"]:
        lines += _ndcg(S["ndcg"]) + [""]
    ad = S.get("add_one")
    if isinstance(ad, dict) and "reuse_token_ids" in ad:
        rows = [[k, f(ad[k]["seconds"]), str(ad[k]["chunks_added"]), str(ad[k].get("commit_phases_s"))]
                for k in ("reuse_token_ids", "retokenise_all")]
        lines += ([f"Add one document to {ad['collection_chunks']:,} chunks, `ingest()` end to end; reusing "
                   f"the stored token ids is {f(ad.get('x_faster'))}x faster than re-tokenising every row", ""]
                  + table(["BM25 update", "seconds", "chunks added", "commit phases s"], rows) + [""])
    tt = S.get("ttft")
    if isinstance(tt, dict) and "results" in tt:
        rows = [[k, str(r["n"]), f(r["overhead_p50_ms"]), f(r["overhead_p95_ms"])] for k, r in tt["results"].items()]
        lines += ([f"TTFT overhead over a fake NIM with a fixed {tt.get('server_ttft_ms')} ms TTFT (ms; "
                   "raw_http is the floor)", ""] + table(["path", "n", "p50", "p95"], rows) + [""])
        aa = tt.get("api_added")
        if isinstance(aa, dict):
            lines += [f"HTTP API (client in its own process) adds over answer(): p50 {f(aa['over_answer_p50_ms'])} / "
                      f"p95 {f(aa['over_answer_p95_ms'])} ms, retrieval included; the HTTP layer alone (over Engine.ask "
                      f"on the same collection): p50 {f(aa['http_layer_p50_ms'])} / p95 {f(aa['http_layer_p95_ms'])} ms",
                      ""]
    cc = S.get("concurrency")
    if isinstance(cc, dict) and "collection_chunks" in cc:
        rows = [[k.split("_")[0], str(r["requests"]), str(r["errors"]),
                 f"{f(r['overhead_p50_ms'], 1)} / {f(r['overhead_p95_ms'], 1)}",
                 f"{f(r['answer_overhead_p50_ms'], 1)} / {f(r['answer_overhead_p95_ms'], 1)}", f(r["requests_per_s"], 1)]
                for k, r in cc.items() if k.endswith("_users")]
        lines += ([f"Concurrent users on the {cc['collection_chunks']:,}-chunk collection ({cc['embedder']} query "
                   "embedding + hybrid retrieval + answer() from a fake NIM), TTFT overhead ms", ""]
                  + table(["users", "requests", "errors", "incl. retrieval p50 / p95", "answer() only p50 / p95",
                           "requests/s"], rows) + [""])
    off = S.get("offline")
    if isinstance(off, dict) and "quiet" in off:
        from .offline import render_lines

        lines += render_lines(off) + [""]
    idle = S.get("idle")
    if isinstance(idle, dict) and "rows" in idle:
        from .idle import table as idle_table

        lines += ["An idle server (`hybrid-rag serve`, nobody asking), CPU", "", idle_table(idle), ""]
    g = S.get("gpu")
    if isinstance(g, dict):
        lines.append("gpu: " + (g.get("skipped") or json.dumps({k: val for k, val in g.items() if k != "section_s"})))
    for k, val in S.items():
        if isinstance(val, dict) and "skipped" in val and k != "gpu":
            lines.append(f"section {k} skipped: {val['skipped']}")
        if isinstance(val, dict) and "error" in val:
            lines.append(f"section {k} FAILED: {val['error']}")
    return "\n".join(lines)


__all__ = ["render"]
