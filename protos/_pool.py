"""The descriptor pool every generated message of ours is registered in.

TensorFlow and tensorflow-serving-api register the same proto file names and
symbols (``tensorflow.serving.PredictRequest``, ...) in protobuf's default
pool, so registering ours there too fails with "duplicate file name" as soon
as both are imported. A private pool keeps the package names, and so the
gRPC method paths, ``Any`` type URLs and reflection data, identical to TF
Serving's while living beside TensorFlow in one process.
"""

from google.protobuf import any_pb2, descriptor_pool, struct_pb2, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()

# The well-known types our files import (and Struct, which GetModelMetadata's runtime
# field packs) must be in the same pool.
for _module in (any_pb2, wrappers_pb2, struct_pb2):
    POOL.AddSerializedFile(_module.DESCRIPTOR.serialized_pb)
