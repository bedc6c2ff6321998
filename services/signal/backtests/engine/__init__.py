"""Backtesting: simulate a strategy's target-position signal over bars, with costs, sizing and protective exits."""
