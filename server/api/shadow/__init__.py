"""Live shadowing of a TF Serving endpoint (docs/shadow.md): a layer over the gRPC
PredictionService's calls, configured by --shadow_config_file."""

from onnx_serving.server.api.shadow.layer import Shadowing

__all__ = ["Shadowing"]
