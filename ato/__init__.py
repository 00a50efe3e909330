"""ato-stream: real-time customer-journey engine (catalog, config, CLI, traffic model)."""

__version__ = "0.1.0"
