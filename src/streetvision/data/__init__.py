"""Data: sources, synthetic demo scenes, ingest (hash, dedupe, quarantine), splits."""
