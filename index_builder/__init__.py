"""The Spark index builder: catalog + events -> an artifact bundle, and the shared core the chat stands on.

Subpackages, bottom layer first (the import contract is in ``pyproject.toml``; README "Layout"):
``core`` (bundle format and reader, embedders, text helpers, settings, errors: imports neither side),
``stages`` (the batch build's Spark stages), ``storage.db`` (the server database tables), ``live`` (the stream
and its fold-in), ``scoring`` (every user ranked by the chat's own recommender), ``evaluation``, ``insights``
and ``storage.export`` (score with the chat), ``pipeline`` (the build as a list of stages), ``cli``.
"""
