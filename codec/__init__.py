"""The TF Serving wire formats without TensorFlow, shared by the server, the client and
the migration tools: numpy ⇄ TensorProto, TensorFlow's dtype names, TFRecord files and
the PredictionLog records they hold.

Nothing is imported here, so ``dtypes`` can be used without protobuf.
"""
