"""Live updates: the Spark Structured Streaming job over Kafka (``stream``, ``kafka_source``), the fold-in that
publishes a new bundle version from a batch (``foldin``) and the test producer (``produce``). Runs beside the
chat, never on it: imports ``stages``, ``storage.db`` and ``core``."""
