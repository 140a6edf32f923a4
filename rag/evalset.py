"""BEIR-format evaluation sets: finding the files of a set folder, and the collection its corpus lives in.

A BEIR folder holds ``corpus.jsonl`` (or ``corpus.jsonl.gz``), ``queries.jsonl`` and the judgements as
``qrels.tsv`` or ``qrels/<split>.tsv`` (``test`` by default). :func:`ensure_collection` ingests the corpus into
a collection, or reuses that collection when it already holds exactly this corpus (same ids, same content);
a collection of that name with other content is never changed: the error says what to do.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidInput


@dataclass(frozen=True)
class BeirSet:
    name: str               # the folder's name, made fit for a collection name
    corpus: Path | None
    queries: Path
    qrels: Path


def collection_name_for(folder: str) -> str:
    """A collection name from a folder name: letters, digits, '_', '-', '.', at most 64 characters."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder).strip("-.")[:64].rstrip("-.")
    return name if name and name[0].isalnum() else f"beir-{name}".rstrip("-.")[:64]


def find_set(directory: str | Path, split: str | None = None, *, need_corpus: bool = True) -> BeirSet:
    """The files of a BEIR folder; the error names what is missing."""
    d = Path(directory)
    if not d.is_dir():
        raise InvalidInput(f"{d}: not a folder. --beir takes a BEIR folder with corpus.jsonl(.gz), queries.jsonl "
                           "and qrels.tsv (or qrels/test.tsv).")
    corpus = next((p for p in (d / "corpus.jsonl", d / "corpus.jsonl.gz") if p.is_file()), None)
    if corpus is None and need_corpus:
        raise InvalidInput(f"{d}: has no corpus.jsonl or corpus.jsonl.gz.")
    queries = d / "queries.jsonl"
    if not queries.is_file():
        raise InvalidInput(f"{d}: has no queries.jsonl.")
    if split:
        candidates = [d / "qrels" / f"{split}.tsv", d / f"qrels-{split}.tsv"]
    else:
        candidates = [d / "qrels.tsv", d / "qrels" / "test.tsv"]
    qrels = next((p for p in candidates if p.is_file()), None)
    if qrels is None:
        raise InvalidInput(f"{d}: has no judgements: looked for {', '.join(p.name if p.parent == d else f'qrels/{p.name}' for p in candidates)}"
                           + ("" if split else "; name another split with --split (e.g. --split dev)") + ".")
    return BeirSet(collection_name_for(d.resolve().name), corpus, queries, qrels)


def corpus_hashes(path: str | Path, settings) -> dict[str, str]:
    """{document id: content hash} of a BEIR corpus, hashed as ingest hashes documents (empty ones left out)."""
    from ingest.formats import LoadError, load
    from ingest.pipeline import _read, doc_hash

    try:
        docs = load(_read(Path(path), settings.limits.max_file_bytes, Path(path).name), Path(path).name)
    except LoadError as e:
        raise InvalidInput(str(e)) from None
    if any(d.metadata.get("format") != "beir" for d in docs):
        raise InvalidInput(f"{Path(path).name}: is not a BEIR corpus (one {{\"_id\", \"title\", \"text\"}} object "
                           "per line).")
    return {d.doc_id: doc_hash(d) for d in docs if d.text.strip() or d.title.strip()}


def collection_matches(name: str, hashes: dict[str, str], settings) -> bool | None:
    """None: no such collection; True: it holds exactly these documents; False: something else."""
    from .store import CollectionNotFound, open_collection

    try:
        docs = open_collection(name, settings).documents()
    except CollectionNotFound:
        return None
    return {d["doc_id"]: d["sha256"] for d in docs} == hashes


def ensure_collection(name: str, corpus: str | Path, *, settings, embedder, progress=None, cancelled=None) -> str:
    """Make ``name`` hold the corpus: ingest it, or reuse the collection when it already holds exactly this
    corpus. Returns "reused" or "ingested"."""
    from ingest.pipeline import ingest

    from .store import validate_name

    validate_name(name)
    hashes = corpus_hashes(corpus, settings)
    same = collection_matches(name, hashes, settings)
    if same:
        return "reused"
    if same is False:
        raise InvalidInput(f"A collection named {name!r} exists with other documents than this corpus: evaluate "
                           "into another collection (--collection NEW_NAME), or delete it first "
                           f"(hybrid-rag collections --delete {name}).")
    results = ingest(name, [(Path(corpus).name, Path(corpus))], settings=settings, embedder=embedder,
                     progress=progress, cancelled=cancelled)
    failed = [r for r in results if not r.ok]
    if failed:
        raise InvalidInput(f"The corpus could not be ingested: {failed[0].error}")
    return "ingested"


__all__ = ["BeirSet", "find_set", "ensure_collection", "corpus_hashes", "collection_matches", "collection_name_for"]
