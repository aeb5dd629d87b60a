"""The serving core: every API's pipeline, independent of how requests arrive.

gRPC (``api/grpc``), REST (``api/rest``) and warmup convert their requests into
calls here and the results back; what a request means, which checks it passes and
in what order, and the stage metrics, are decided here once.
"""
