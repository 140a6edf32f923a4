"""Milvus state records: the ``hybrid_rag_collections`` collection that names each app collection's committed
generation (its info JSON in parts), the filter-expression helpers, and loading a collection once per process."""
from __future__ import annotations

import hashlib
import json
import re

META = "hybrid_rag_collections"
FORMAT = 1
TEXT_MAX = 65535       # Milvus's VARCHAR limit (bytes)
PART = 60000           # state JSON is stored in parts of this many (ASCII) characters
_LOADED: set[tuple[int, str]] = set()  # (id of the client, Milvus collection) loaded by this process


def milvus_name(name: str) -> str:
    return f"hr_{re.sub(r'[^0-9A-Za-z_]', '_', name)}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _q(s: str) -> str:
    """A Milvus filter string literal."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _strs(items) -> str:
    return "[" + ",".join(_q(s) for s in items) + "]"


def _ints(items) -> str:
    return "[" + ",".join(str(int(i)) for i in items) + "]"


def _ensure_meta(c) -> None:
    if c.has_collection(META):
        _load(c, META)
        return
    from pymilvus import DataType

    s = c.create_schema(auto_id=False)
    s.add_field("key", DataType.VARCHAR, is_primary=True, max_length=512)
    s.add_field("name", DataType.VARCHAR, max_length=256)
    s.add_field("gen", DataType.INT64)
    s.add_field("rev", DataType.INT64)
    s.add_field("part", DataType.INT64)
    s.add_field("parts", DataType.INT64)
    s.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX)
    s.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field in every collection
    ip = c.prepare_index_params()
    ip.add_index("v", index_type="FLAT", metric_type="L2")
    c.create_collection(META, schema=s, index_params=ip, consistency_level="Strong")


def _load(c, mname: str) -> None:
    """Load a collection for search once per process (a server keeps it loaded; Milvus Lite after a restart
    does not)."""
    if (id(c), mname) not in _LOADED:
        c.load_collection(mname)
        _LOADED.add((id(c), mname))


def _states(c, name: str | None = None) -> dict[str, list[tuple[int, int, dict, list]]]:
    """Every complete state record, per collection name, newest first: (gen, rev, info, keys)."""
    rows = _query_all(c, META, f"name == {_q(name)}" if name else "gen >= 0",
                      ["key", "name", "gen", "rev", "part", "parts", "text"])
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["name"], r["gen"], r["rev"]), []).append(r)
    out: dict[str, list] = {}
    for (n, gen, rev), parts in groups.items():
        parts.sort(key=lambda r: r["part"])
        if len(parts) != parts[0]["parts"]:
            continue  # a state being written (or cut short by a crash)
        info = json.loads("".join(p["text"] for p in parts))
        out.setdefault(n, []).append((gen, rev, info, [p["key"] for p in parts]))
    for states in out.values():
        states.sort(key=lambda s: (s[0], s[1]), reverse=True)
    return out


def read_state(c, name: str):
    states = _states(c, name).get(name)
    return states[0][:3] if states else None


def _write_state(c, name: str, gen: int, rev: int, info: dict) -> None:
    text = json.dumps(info, separators=(",", ":"))
    parts = [text[i:i + PART] for i in range(0, len(text), PART)] or [""]
    c.insert(META, [{"key": f"{name}/{gen:012d}.{rev}/{i}", "name": name, "gen": gen, "rev": rev, "part": i,
                     "parts": len(parts), "text": p, "v": [0.0, 0.0]} for i, p in enumerate(parts)])
    older = [k for g, r, _, keys in _states(c, name).get(name, [])[2:] for k in keys]  # keep the one before
    if older:
        c.delete(META, ids=older)


def _query_all(c, mname: str, expr: str, fields: list[str], batch: int = 4096) -> list[dict]:
    it = c.query_iterator(mname, batch_size=batch, filter=expr, output_fields=fields)
    out = []
    try:
        while True:
            b = it.next()
            if not b:
                return out
            out.extend(b)
    finally:
        it.close()


__all__ = ["META", "milvus_name", "read_state"]
