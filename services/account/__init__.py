"""The account domain: its gRPC adapter, domain logic and persistence."""
