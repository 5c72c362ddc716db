"""The server database (any SQLAlchemy URL): its tables and writes (``db``, used by the stream) and the export
of every user's top-N from the chat's ranking (``export``, one layer up: it scores with the chat)."""
