"""Market data feeds: one adapter interface, implemented by the simulator, the replay of stored bars and ccxt."""
