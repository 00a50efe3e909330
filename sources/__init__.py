"""Embedded inputs: the traffic generator and JSON-lines files, yielding raw batches."""
