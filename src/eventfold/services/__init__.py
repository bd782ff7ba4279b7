"""The service layer: what the API does, independent of HTTP and of the backend."""
