"""Dataflow definitions."""
