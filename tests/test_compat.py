"""rag/_compat.py: ast.parse is serialised, and still parses what it parsed before."""
import ast
import threading

import numpy as np

import rag  # noqa: F401  (installs the work-around)
from rag import _compat


def test_ast_parse_is_wrapped_once_and_still_works():
    assert getattr(ast.parse, "_hybrid_rag_locked", False)
    assert not _compat.serialise_ast_parse()  # idempotent
    assert ast.literal_eval("{'shape': (3, 4), 'fortran_order': False}") == {"shape": (3, 4), "fortran_order": False}


def test_np_load_from_many_threads(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    errors = []

    def load():
        try:
            for _ in range(200):
                assert np.load(tmp_path / "a.npy", mmap_mode="r").shape == (3, 4)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
