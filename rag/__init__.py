"""rag: offline question answering and cited briefings over local documents."""

__version__ = "0.1.0"
