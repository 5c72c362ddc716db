"""The assistant: loads a bundle and answers shoppers. Never imports pyspark (see DESIGN.md)."""
