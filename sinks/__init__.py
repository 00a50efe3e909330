"""Outputs of the journey flow: JSON-lines files and the run's progress and summary."""
