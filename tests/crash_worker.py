"""Ingest in a loop until killed: the subject of test_reliability_crash.py's SIGKILL test.

    python tests/crash_worker.py DATA_DIR LOG_FILE

The store backend and Milvus uri come from the environment (HYBRID_RAG__STORE__*). Each round ingests three new documents (every fourth round also deletes one) into collection ``c``, then
appends ``committed <version> <documents>`` to LOG_FILE after each commit, flushed and fsynced, so the test knows which
versions were fully committed. Prints ``ready`` once its imports are done.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def doc_text(i: int) -> str:
    para = f"Document {i} describes specimen {i * 7919 % 1000} from site {i % 13}. "
    return f"# Specimen {i}\n\n" + (para * (8 + i % 20)) + f"\n\nClosing note {i}.\n"


def main() -> None:
    data_dir, log_path = sys.argv[1], sys.argv[2]
    from reliability_kit import FakeEmbedder

    from ingest.pipeline import ingest, remove_documents
    from rag.config import load_settings
    from rag.store import CollectionNotFound, open_collection

    settings = load_settings(data_dir=data_dir)
    settings.chunking.chunk_tokens, settings.chunking.overlap_tokens = 48, 8
    emb = FakeEmbedder()
    try:
        docs = [d["doc_id"] for d in open_collection("c", settings).documents()]
    except CollectionNotFound:
        docs = []
    n = max([int(d.split("-")[1].split(".")[0]) for d in docs] + [0]) + 1
    log = open(log_path, "a")
    if docs:  # a kill after the last CURRENT swap but before its log line: record what was found
        committed(log, settings)
    print("ready", flush=True)
    rnd = 0
    while True:
        files = [(f"doc-{i}.md", doc_text(i).encode()) for i in range(n, n + 3)]
        n += 3
        ingest("c", files, settings=settings, embedder=emb)
        committed(log, settings)
        rnd += 1
        if rnd % 4 == 0:
            col = open_collection("c", settings)
            victim = col.documents()[rnd % max(1, len(col.documents()))]["doc_id"]
            remove_documents("c", [victim], settings=settings)
            committed(log, settings)


def committed(log, settings) -> None:
    from rag.store import open_collection

    col = open_collection("c", settings)
    log.write(f"committed {col.version} {len(col.documents())}\n")
    log.flush()
    os.fsync(log.fileno())


if __name__ == "__main__":
    main()
