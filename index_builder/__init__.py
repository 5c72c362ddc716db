"""The Spark index builder: catalog + events -> an artifact bundle (see DESIGN.md)."""
