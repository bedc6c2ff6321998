"""The signal domain: its gRPC adapter, domain logic and persistence."""
