"""Model inference: ONNX sessions, model registry, routing, training and the HTTP API."""
