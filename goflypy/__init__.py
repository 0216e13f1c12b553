"""goflypy: self-hosted customer-service chat with an FAQ robot."""

__version__ = "0.1.0"
