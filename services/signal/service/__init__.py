"""The signal domain's use cases, one facade per sub-domain: `catalogue` (indicators and strategies: list, compute,
evaluate), `backtests` (plan, run, cancel, read), `alerts` (alert rules), `live` (live signals and their
performance). The servicer decodes a request, calls one facade method and encodes its answer; the facades hold the
rules, raise the domain errors (services.core.errors) and never see protobuf."""
