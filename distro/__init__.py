"""Stellwerk: turns one cluster file into everything a bare-metal Kubernetes cluster needs."""

__version__ = "0.1.0"
