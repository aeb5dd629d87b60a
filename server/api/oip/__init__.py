"""The Open Inference Protocol (KServe v2): gRPC's inference.GRPCInferenceService and REST's
/v2/ paths, a second transport over the one ServingCore (docs/open-inference.md)."""
