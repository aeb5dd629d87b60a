"""Our generated protos: fresh, wire-identical to TF Serving's, and importable beside them."""

from __future__ import annotations

import filecmp
import importlib
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor

from onnx_serving.protos import generate
from onnx_serving.protos._pool import POOL

# Every TF Serving message file we ship, paired with tensorflow-serving-api's module of the
# same file (the Open Inference Protocol's, under inference/, is vendored as published).
OUR_FILES = [str(p) for p in generate.proto_files() if p.parts[0] != "inference"]

# Fields TF declares that ours leave undeclared on purpose (they still parse as unknown fields).
OMITTED = {
    "tensorflow.TensorInfo": {"composite_tensor"},
    "tensorflow.RunOptions": None,  # a subset of TensorFlow's RunOptions
    "tensorflow.RunMetadata": None,
}


# Files tensorflow-serving-api does not ship: fields as TF Serving's .proto declares them.
NOT_IN_TF_SERVING_API = {
    "tensorflow.serving.PrometheusConfig": {
        "enable": (1, FieldDescriptor.TYPE_BOOL),
        "path": (2, FieldDescriptor.TYPE_STRING),
    },
    "tensorflow.serving.MonitoringConfig": {
        "prometheus_config": (1, FieldDescriptor.TYPE_MESSAGE),
    },
    "tensorflow.serving.SSLConfig": {
        "server_key": (1, FieldDescriptor.TYPE_STRING),
        "server_cert": (2, FieldDescriptor.TYPE_STRING),
        "custom_ca": (3, FieldDescriptor.TYPE_STRING),
        "client_verify": (4, FieldDescriptor.TYPE_BOOL),
    },
    "tensorflow.serving.BatchingParameters": {
        "max_batch_size": (1, FieldDescriptor.TYPE_MESSAGE),
        "batch_timeout_micros": (2, FieldDescriptor.TYPE_MESSAGE),
        "max_enqueued_batches": (3, FieldDescriptor.TYPE_MESSAGE),
        "num_batch_threads": (4, FieldDescriptor.TYPE_MESSAGE),
        "thread_pool_name": (5, FieldDescriptor.TYPE_MESSAGE),
        "allowed_batch_sizes": (6, FieldDescriptor.TYPE_INT64),
        "pad_variable_length_inputs": (7, FieldDescriptor.TYPE_BOOL),
        "enable_large_batch_splitting": (8, FieldDescriptor.TYPE_MESSAGE),
        "max_execution_batch_size": (9, FieldDescriptor.TYPE_MESSAGE),
    },
}


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    assert written
    stale = [
        str(rel)
        for rel in written
        if not (generate.PROTO_ROOT / rel).exists()
        or not filecmp.cmp(tmp_path / rel, generate.PROTO_ROOT / rel, shallow=False)
    ]
    assert not stale, f"run `make protos`: generated modules differ for {stale}"


def _import_tf_serving() -> None:
    from tensorflow_serving.apis import (  # noqa: F401
        get_model_metadata_pb2,
        get_model_status_pb2,
        inference_pb2,
        model_management_pb2,
        model_service_pb2,
        prediction_log_pb2,
        prediction_service_pb2,
    )


def _our_messages() -> list[Descriptor]:
    messages: list[Descriptor] = []

    def walk(descriptor: Descriptor) -> None:
        messages.append(descriptor)
        for nested in descriptor.nested_types:
            walk(nested)

    for name in OUR_FILES:
        module = name.removesuffix(".proto").replace("/", ".") + "_pb2"
        importlib.import_module(f"{generate.PACKAGE}.{module}")
        file: FileDescriptor = POOL.FindFileByName(name)
        for message in file.message_types_by_name.values():
            walk(message)
    return messages


@pytest.mark.parametrize("ours", _our_messages(), ids=lambda d: d.full_name)
def test_messages_match_tensorflow_serving(ours: Descriptor) -> None:
    """Same field names, numbers, types and labels as tensorflow-serving-api's messages."""
    _import_tf_serving()
    if ours.full_name in NOT_IN_TF_SERVING_API:
        fields = {f.name: (f.number, f.type) for f in ours.fields}
        assert fields == NOT_IN_TF_SERVING_API[ours.full_name]
        return
    theirs = descriptor_pool.Default().FindMessageTypeByName(ours.full_name)
    omitted = OMITTED.get(ours.full_name, set())
    for field in ours.fields:
        tf_field = theirs.fields_by_name.get(field.name)
        assert tf_field is not None, f"{ours.full_name}.{field.name} not in TF's message"
        assert (field.number, field.type, field.is_repeated) == (
            tf_field.number, tf_field.type, tf_field.is_repeated,
        ), f"{ours.full_name}.{field.name}"
        if field.message_type is not None:
            assert field.message_type.full_name == tf_field.message_type.full_name
        if field.enum_type is not None:
            ours_values = {v.name: v.number for v in field.enum_type.values}
            tf_values = {v.name: v.number for v in tf_field.enum_type.values}
            assert ours_values.items() <= tf_values.items() or ours_values == tf_values
    if omitted is None:
        return
    missing = {f.name for f in theirs.fields} - {f.name for f in ours.fields} - omitted
    assert not missing, f"{ours.full_name} lacks TF's fields {missing}"


def test_services_have_tf_serving_method_paths() -> None:
    _import_tf_serving()
    for service in ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
        ours = POOL.FindServiceByName(service)
        theirs = descriptor_pool.Default().FindServiceByName(service)
        def signature(s):
            return [(m.name, m.input_type.full_name, m.output_type.full_name) for m in s.methods]

        assert signature(ours) == signature(theirs)


def test_coexists_with_tensorflow_in_one_process() -> None:
    """Both sets of messages import and interoperate, bytes for bytes, in one process."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2 as tf_predict_pb2

    from onnx_serving.codec.tensors import make_ndarray, make_tensor_proto
    from onnx_serving.protos.tensorflow_serving.apis import predict_pb2

    ours = predict_pb2.PredictRequest()
    ours.model_spec.name = "m"
    ours.model_spec.version.value = 3
    ours.inputs["x"].CopyFrom(make_tensor_proto(__import__("numpy").arange(4.0)))
    theirs = tf_predict_pb2.PredictRequest.FromString(ours.SerializeToString())
    assert theirs.model_spec.version.value == 3
    assert tf.make_ndarray(theirs.inputs["x"]).tolist() == [0.0, 1.0, 2.0, 3.0]

    theirs.inputs["z"].CopyFrom(tf.make_tensor_proto([[1, 2]]))
    back = predict_pb2.PredictRequest.FromString(theirs.SerializeToString())
    assert make_ndarray(back.inputs["z"]).tolist() == [[1, 2]]
    assert type(ours) is not type(theirs)
