"""The bottom layer, shared by the builder and the chat; it imports neither of them (nor Spark).

It owns the bundle format (every file name, publishing, checksums: ``bundle``) and its reader
(``bundle_reader``), the embedders behind one interface with the query encoder the chat uses (``embedders``),
the text helpers and keyword search (``text``, ``search``, ``tokens``), the insights figures shared by the
report page and the Insights tab (``figures``), column names (``constants``), the one settings reader
(``settings``), stage lines (``progress``) and the errors (``errors``).
"""
