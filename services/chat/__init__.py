"""The chat domain: its gRPC adapter, domain logic and persistence."""
