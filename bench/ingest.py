"""Adding one document to a large collection, ``ingest()`` end to end (load, chunk, embed, commit): with
the stored BM25 token ids (the app's strategy) and, on the next version, with them hidden, so that the
writer re-tokenises every row (the strategy it replaced). One untimed ingest into a scratch collection
first, so neither run pays for first calls (tokenizer, ONNX session shapes)."""
from __future__ import annotations

import time

from .common import ratio


def add_one_document(collection: str, settings, embedder, docs: list[dict]) -> dict:
    from ingest.pipeline import ingest
    from rag.store import delete_collection, open_collection

    warm = docs[-12]
    ingest("bench-warm-up", [("warm-up.txt", f"{warm.get('title', '')}\n\n{warm['text']}".encode())],
           settings=settings, embedder=embedder)
    delete_collection("bench-warm-up", settings.data_dir)
    out = {}
    for i, strategy in enumerate(("reuse_token_ids", "retokenise_all")):
        col = open_collection(collection, settings)
        hidden = []
        if strategy == "retokenise_all":
            for f in ("tokens.npy", "offsets.npy"):
                p = col.vdir / "sparse" / f
                if p.exists():
                    p.rename(p.with_suffix(".hidden"))
                    hidden.append(p)
        d = docs[-1 - i]
        body = f"{d.get('title', '')}\n\n{d['text']}\n\n" + "\n\n".join(x["text"] for x in docs[-10 - i:-2 - i])
        t = time.perf_counter()
        try:
            res = ingest(collection, [(f"new-{i}.txt", body.encode())], settings=settings, embedder=embedder)
        finally:
            for p in hidden:
                p.with_suffix(".hidden").rename(p)
        dt = time.perf_counter() - t
        new = open_collection(collection, settings)
        build = new.manifest["build"]
        out[strategy] = {"seconds": round(dt, 2), "chunks_added": res[0].chunks, "status": res[0].status,
                         "collection_chunks": new.size, "commit_phases_s": build.get("seconds"),
                         "dense_grown_in_place": build.get("dense_grown_in_place"),
                         "sparse_tokens_reused": build.get("sparse_tokens_reused")}
    out["x_faster"] = ratio(out["retokenise_all"]["seconds"], out["reuse_token_ids"]["seconds"])
    return out


__all__ = ["add_one_document"]
