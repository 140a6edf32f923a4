"""The HTTP API: OpenAI-compatible chat with citations, search, collections, ingest jobs, keys, metrics.

``create_app(settings)`` returns one FastAPI app: the API under ``/v1``, ``/healthz``, ``/readyz``,
``/metrics``, the OpenAPI docs at ``/docs``, and (``ui=True``) the Gradio web app mounted at ``/``.
``hybrid-rag serve`` serves it with uvicorn. See docs/api.md.
"""


def create_app(settings, **kwargs):
    from .app import create_app as _create

    return _create(settings, **kwargs)


__all__ = ["create_app"]
