"""Segments: live audiences over profiles (the language, evaluation, incremental state)."""
