"""GCN-GRU training, evaluation, ONNX export and the model registry (built on etfuse core)."""
