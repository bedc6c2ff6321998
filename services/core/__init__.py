"""The runtime every Bullant service shares: settings, server, interceptors, errors, clients, metrics."""
