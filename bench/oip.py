"""The Open Inference Protocol beside TF Serving's API on one server: client p50 and throughput.

    .venv/bin/python bench/oip.py [--seconds 5] [--rounds 3] [--clients 1] [--build]

One server speaks both protocols. For half_plus_two and MobileNetV2 (the bench suite's
cached build, bench/suite/models.py; ``--build`` makes it where absent, which needs
TensorFlow and a few minutes), the same batch-1 prediction is asked six ways in turns,
in slots of ``--seconds / --rounds``, the order reversed every other round so that a
shared machine's drift lands on every way: TF Serving's gRPC Predict
(``tensor_content``) and REST ``:predict`` (JSON, columns and rows),
OIP gRPC ModelInfer (``raw_input_contents``), OIP REST with the binary data extension
(binary in and out) and OIP REST JSON. Each request is encoded once before the clock
starts and each answer is read as bytes, not decoded: the figures are the server's and
the transport's, not a client library's encoding (which would add the most to JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.suite import load, models, payloads
from bench.suite.runners import Call, HttpContender
from onnx_serving.codec.dtypes import oip_name
from onnx_serving.codec.oip import to_raw
from onnx_serving.codec.tensors import make_tensor_proto
from onnx_serving.protos.inference import open_inference_grpc_pb2 as oip_pb
from onnx_serving.protos.tensorflow_serving.apis import predict_pb2
from tests.server_process import ServerProcess, free_port


@dataclass(frozen=True)
class Way:
    """One way to ask: ``make`` gives each client thread its own caller."""

    name: str
    make: Callable[[], Call]
    request_bytes: int


def grpc_way(name: str, channel: grpc.Channel, method: str, request: bytes) -> Way:
    rpc = channel.unary_unary(method)  # bytes in, bytes out: no (de)serializer

    def make() -> Call:
        return lambda: rpc(request, timeout=60)

    return Way(name, make, len(request))


def http_way(name: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> Way:
    return Way(name, HttpContender(name, port, path, body, headers).caller, len(body))


def ways(model: models.BenchModel, channel: grpc.Channel, rest_port: int) -> list[Way]:
    inputs = model.sample(1)
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = model.name
    for alias, array in inputs.items():
        predict.inputs[alias].CopyFrom(make_tensor_proto(array, tensor_content=True))
    infer = oip_pb.ModelInferRequest(model_name=model.name)
    binary: list[bytes] = []
    described = []
    for alias, array in inputs.items():
        infer.inputs.add(name=alias, datatype=oip_name(array.dtype), shape=list(array.shape))
        binary.append(to_raw(array))
        described.append({"name": alias, "datatype": oip_name(array.dtype),
                          "shape": list(array.shape)})
    infer.raw_input_contents.extend(binary)
    header = json.dumps({
        "inputs": [{**d, "parameters": {"binary_data_size": len(raw)}}
                   for d, raw in zip(described, binary, strict=True)],
        "parameters": {"binary_data_output": True},
    }).encode()
    as_json = json.dumps({"inputs": [{**d, "data": array.reshape(-1).tolist()}
                                     for d, array in zip(described, inputs.values(),
                                                         strict=True)]}).encode()
    tf_json = json.dumps({"inputs": {k: v.tolist() for k, v in inputs.items()}}).encode()
    v2 = f"/v2/models/{model.name}/infer"
    return [
        grpc_way("TF Serving gRPC Predict", channel,
                 "/tensorflow.serving.PredictionService/Predict", predict.SerializeToString()),
        grpc_way("OIP gRPC ModelInfer (raw)", channel,
                 "/inference.GRPCInferenceService/ModelInfer", infer.SerializeToString()),
        http_way("OIP REST binary", rest_port, v2, header + b"".join(binary), {
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream"}),
        http_way("TF Serving REST :predict (JSON)", rest_port,
                 f"/v1/models/{model.name}:predict", tf_json,
                 {"Content-Type": "application/json"}),
        http_way("TF Serving REST :predict (JSON rows)", rest_port,
                 f"/v1/models/{model.name}:predict", payloads.rest_rows_body(model),
                 {"Content-Type": "application/json"}),
        http_way("OIP REST JSON", rest_port, v2, as_json, {"Content-Type": "application/json"}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per way and model")
    parser.add_argument("--rounds", type=int, default=3, help="slots per way and model")
    parser.add_argument("--clients", type=int, default=1, help="closed loops at once")
    parser.add_argument("--build", action="store_true",
                        help="build MobileNetV2 if it is not cached (needs TensorFlow)")
    args = parser.parse_args()
    chosen = [models.ensure("half_plus_two", log=print)]
    if args.build or (models.CACHE / models.SPECS["mobilenet_v2"].key / models.DONE).is_file():
        chosen.append(models.ensure("mobilenet_v2", log=print))
    else:
        print("MobileNetV2 is not cached: half_plus_two alone (--build makes it)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = root / "models.config"
        config.write_text("model_config_list { " + " ".join(
            f'config {{ name: "{m.name}" base_path: "{m.onnx_base}" model_platform: "onnx" }}'
            for m in chosen) + " }")
        rest_port = free_port()
        server = ServerProcess([f"--model_config_file={config}", f"--rest_api_port={rest_port}"],
                               root / "server.log").start()
        options = [("grpc.max_receive_message_length", -1)]
        try:
            with grpc.insecure_channel(server.address, options=options) as channel:
                for model in chosen:
                    print(f"\n{model.name}, batch 1, {args.clients} client(s), "
                          f"{args.seconds:g} s each in {args.rounds} round(s)\n")
                    asked = ways(model, channel, rest_port)
                    samples = {way.name: load.Sample() for way in asked}
                    slot = args.seconds / args.rounds
                    for round_ in range(args.rounds):
                        for way in asked if round_ % 2 == 0 else reversed(asked):
                            samples[way.name].add(load.run(
                                [way.make() for _ in range(args.clients)],
                                seconds=slot, warmup=min(1.0, slot / 4)))
                    print(_table(asked, samples))
        finally:
            server.stop()


def _table(asked: list[Way], samples: dict[str, load.Sample]) -> str:
    """Each way's figures, its p50 against OIP gRPC's and its throughput against TF
    Serving gRPC's (the first way); a way's failed requests under the table."""
    oip_p50 = next(samples[way.name].percentile_ms(50) for way in asked
                   if way.name.startswith("OIP gRPC"))
    tf_rate = samples[asked[0].name].throughput
    rows = ["| way | request bytes | p50 ms | p99 ms | requests/s | p50 / OIP gRPC's | "
            f"requests/s / {asked[0].name}'s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for way in asked:
        sample = samples[way.name]
        p50 = sample.percentile_ms(50)
        rows.append(f"| {way.name} | {way.request_bytes} | {p50:.3f} "
                    f"| {sample.percentile_ms(99):.3f} | {sample.throughput:.0f} "
                    f"| {p50 / oip_p50:.2f} | {sample.throughput / tf_rate:.2f} |")
    rows += [f"\n{way.name}: {samples[way.name].errors} failed, the first: "
             f"{samples[way.name].first_error}" for way in asked if samples[way.name].errors]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
