"""The web app: Chat, Documents (admin) and Compare (arena) tabs in one Gradio Blocks app.

Entry points: ``ui.app.build_app(settings)`` and ``ui.serve.run(args)`` (``hybrid-rag serve``).
"""
import importlib

__all__ = ["build_app", "serve"]


def __getattr__(name):  # lazy: importing ``ui`` does not import gradio
    if name == "build_app":
        return importlib.import_module(".app", __name__).build_app
    if name == "serve":
        return importlib.import_module(".serve", __name__)
    raise AttributeError(name)
