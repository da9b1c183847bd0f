"""The console: a Gradio app over the engine and the store (``uv run python -m app``)."""

from app.interface import build_app, make_auth

__all__ = ["build_app", "make_auth"]
