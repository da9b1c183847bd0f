"""The console: its use cases (``app.services``) and its Gradio tabs (``app.ui``).

``python -m app`` runs it."""
