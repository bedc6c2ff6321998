"""The signal domain: indicators, strategies, backtests, alert rules and live signals.

Every RPC follows one path: `servicer.py` decodes the request (with the `encoding.py` of its sub-domain), calls one
method of a facade in `service/` (`catalogue`, `backtests`, `alerts`, `live`), which holds the use case and raises
the domain errors, over the domain types (`backtests/spec.py`, `alerts/rules.py`, `validation.py`, ...) and the
sub-domain's stores (`backtests/store.py`, `alerts/store.py`, `live/*_store.py`). `wiring.py` builds it all.
"""
