"""The numeric core of the model service: forecasting algorithms, their artifacts, walk-forward evaluation with the
promotion gate, and the direction and confidence of a forecast.

Importing this package (or `catalogue`, `evaluation`, `confidence`) never imports torch: the LSTM imports it inside
its functions. Nothing here imports grpc or protobuf; everything takes and returns plain arrays, mappings, bytes and
dataclasses, so a training job can run in a worker process.
"""
