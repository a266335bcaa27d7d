"""The runtime of the Bluesky Growth Engine: configuration, Kafka, Faust agents, ingest, API, CLI."""

__version__ = "0.1.0"
