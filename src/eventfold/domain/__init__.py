"""Pure domain code: the event model, validation, identity and keys. No I/O here."""
