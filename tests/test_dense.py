import numpy as np
import pytest

from rag.config import DenseSettings
from rag.dense import DenseIndex, gpu_count


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_matches_brute_force():
    rng = np.random.default_rng(0)
    X, Q = _unit(rng, 500, 32), _unit(rng, 20, 32)
    idx = DenseIndex(32).build(X)
    assert idx.kind == "flat"
    scores, rows = idx.search(Q, 10)
    brute = Q @ X.T
    want = np.argsort(-brute, axis=1)[:, :10]
    assert (rows == want).all()
    np.testing.assert_allclose(scores, np.take_along_axis(brute, want, 1), rtol=1e-5, atol=1e-5)


def test_hnsw_above_threshold_has_high_recall():
    rng = np.random.default_rng(1)
    X, Q = _unit(rng, 3000, 32), _unit(rng, 50, 32)
    idx = DenseIndex(32, DenseSettings(exact_max=1000, approx="hnsw", hnsw_ef_search=128)).build(X)
    assert idx.kind == "hnsw"
    _, rows = idx.search(Q, 10)
    want = np.argsort(-(Q @ X.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, want)])
    assert recall >= 0.9


def test_add_save_load(tmp_path):
    rng = np.random.default_rng(2)
    X = _unit(rng, 100, 16)
    idx = DenseIndex(16).build(X[:60]).add(X[60:])
    idx.save(tmp_path / "d")
    back = DenseIndex.load(tmp_path / "d")
    assert back.size == 100
    _, rows = back.search(X[77], 1)
    assert rows[0, 0] == 77


def test_wrong_dimension_is_a_clear_error():
    idx = DenseIndex(8).build(np.eye(8, dtype=np.float32))
    with pytest.raises(ValueError, match="dimension 8"):
        idx.search(np.ones(5, dtype=np.float32), 1)


def test_empty_index_returns_nothing():
    idx = DenseIndex(4).build(np.zeros((0, 4), np.float32))
    scores, rows = idx.search(np.ones(4, np.float32), 5)
    assert rows.shape == (1, 0)


@pytest.mark.gpu("faiss")
def test_gpu_exact_search_matches_cpu():
    assert gpu_count() > 0
    rng = np.random.default_rng(3)
    X, Q = _unit(rng, 20000, 384), _unit(rng, 64, 384)
    gpu = DenseIndex(384).build(X)
    assert gpu.device == "gpu"
    cpu = DenseIndex(384, DenseSettings(use_gpu="never")).build(X)
    assert cpu.device == "cpu"
    _, rg = gpu.search(Q, 10)
    _, rc = cpu.search(Q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rg, rc)]) >= 0.99
