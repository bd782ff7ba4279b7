"""Logs and metrics: what operators see of a running eventfold."""
