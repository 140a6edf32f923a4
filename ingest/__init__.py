"""Ingest: load files, chunk them, embed them and write them into a collection."""
__all__ = ["ingest", "FileResult", "IngestCancelled"]


def __getattr__(name):  # lazy: keep `import ingest` free of model imports
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
