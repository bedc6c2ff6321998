"""The market domain: its gRPC adapter, domain logic and persistence."""
