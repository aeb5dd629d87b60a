"""Migration off TF Serving: convert SavedModel repositories to ONNX, compare two servers."""
