"""The live side of the signal service: the leader's engine (ticks → bars → strategies → fused signals → alerts),
the stored signals and alert firings, the replicas' StreamSignals hub, and signal performance."""
