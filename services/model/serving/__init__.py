"""Predict: the served prediction, the A/B split, the serving use case and the store of recorded predictions."""
