"""The HTTP edge: decode, authenticate, call one service, map errors to statuses."""
