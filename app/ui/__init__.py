"""The console's Gradio tabs, one module per tab; ``interface.py`` assembles them. A tab parses input,
calls ``app.services`` and renders; it runs no SQL and no policy logic."""
