"""eventfold: a self-hosted Custom Event API."""

__version__ = "0.1.0"
