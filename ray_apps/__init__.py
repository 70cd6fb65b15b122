"""ray-apps: build, tune and serve machine-learning models over market data on Ray."""

__version__ = "0.1.0"
