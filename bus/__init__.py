"""busway: a self-hosted, EventBridge-like event bus for Python teams."""

__version__ = "0.1.0"
