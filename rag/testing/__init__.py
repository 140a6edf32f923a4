"""Test doubles that ship with the package, so that the tests and the benchmarks import them as
``rag.testing.*`` instead of editing ``sys.path``. Nothing in the app imports them.

- :mod:`rag.testing.fake_nim`: a fake OpenAI-compatible NIM on loopback, and a catalog pointing at it.
- :mod:`rag.testing.starter`: the starter collection (README and docs/) and questions about it.
"""
