"""ONNX predictor, tiling, product writer, HTTP API and quicklook maps (built on etfuse core)."""
