"""The model domain: its gRPC adapter, domain logic and persistence."""
