"""Benchmarks for hybrid-rag: ``python -m bench`` (or ``hybrid-rag bench``). See docs/benchmarks.md."""


def main(argv=None) -> int:
    from .__main__ import main as _main

    return _main(argv)


__all__ = ["main"]
