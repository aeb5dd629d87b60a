"""Every GPU and many-core check in one run, for a machine lent for minutes.

    python3 bench/device.py --out DIR [--wheels .whl/device] [--parts /tmp/ortgpu]
        [--budget 450] [--seconds 2] [--workers 1,2,4,8] [--steps a,b]

Writes ``DIR/device.json`` (every figure, each step's status and why) and
``DIR/device.md`` (the same as tables), both rewritten after every step, and
``DIR/device.log`` (each step's own output). Each step runs in a process of its
own under a time limit (the limits add up to ``--budget``), so one that fails,
hangs or dies (a CUDA fault) loses none of the others' figures; one the machine
cannot do is skipped with the reason.

- ``providers``: ONNX Runtime's build and providers, the GPU, and which CUDA,
  cuDNN and TensorRT libraries load.
- ``sessions``: a CUDA and a TensorRT session through the server's own session
  builder (explicit providers, no fallback): which loaded, or why not.
- ``mobilenet_v2``, ``bert_tiny``: in-process ONNX Runtime on the CPU and on CUDA,
  IO binding to device memory and ``enable_cuda_graph`` against plain ``run()``
  (raw ONNX Runtime and the server's session), and the real server over gRPC on
  the CPU and on CUDA, at 1 and 16 clients; each row beside in-process ONNX
  Runtime on its provider. TensorFlow is not on the device machine, so the
  graphs are built here with onnx.helper instead of bench/suite/models.py's
  Keras-and-convert: MobileNetV2's exact layer table (batch norm folded, random
  weights) and the same BERT-shaped encoder (bench.suite.models' sizes).
- ``workers``: half_plus_two through the real server at ``--num_workers`` 1, 2,
  4, 8 (those that leave half the cores to the clients), driven by client
  processes: throughput, p50, and the server's CPU per request; and 1 worker once
  more with ``--inline_call_cpu_us=0`` (every call handed to a worker thread).
- ``gpu_tests``: the test modules whose checks depend on a GPU (GPU_TESTS).

On the device machine (docs/performance.md, "Device check") ``--wheels`` names
the folder bench/device_wheels.sh filled (the server's dependencies, installed
here into a private folder) and ``--parts`` the folder where earlier calls left
onnxruntime-gpu's wheel in parts. The CUDA libraries are PyTorch's pip packages
on that machine, put on ``LD_LIBRARY_PATH`` for the steps.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
CPU = "CPUExecutionProvider"
# Test modules with checks that run only where CUDA is (or is not) present.
GPU_TESTS = ("tests/test_binding.py", "tests/test_runtime_config.py", "tests/test_flags.py")
CLIENTS = (1, 16)  # concurrency of the model steps
WORKER_COUNTS = (1, 2, 4, 8)
READY = "Running gRPC ModelServer at"  # logged by each server process once it serves


class Skip(Exception):
    """What this machine lacks for a step or a row; the message says what."""


# --- the parent: setup, one process per step, the report ------------------------------


@dataclass(frozen=True)
class Step:
    run: Callable[[Context], None]
    limit: float  # seconds; the limits add up to the default budget


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for device.json, .md and .log")
    parser.add_argument("--wheels", type=Path, help="wheels to install first (.whl/device)")
    parser.add_argument("--parts", type=Path, help="folder holding onnxruntime-gpu's parts")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all steps")
    parser.add_argument("--seconds", type=float, default=2.0, help="each measuring window")
    parser.add_argument("--workers", default="", help="worker counts (default: as cores allow)")
    parser.add_argument("--steps", default="", help="only these steps, comma-separated")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # a child: run this step
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        return run_step(args)
    if args.out is None:
        parser.error("--out is required")
    chosen = [s for s in args.steps.split(",") if s] or list(STEPS)
    unknown = set(chosen) - STEPS.keys()
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; known: {list(STEPS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="device-check-"))
    try:
        return run_all(args, chosen, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_all(args: argparse.Namespace, chosen: Sequence[str], scratch: Path) -> int:
    started = time.monotonic()
    scale = args.budget / sum(step.limit for step in STEPS.values())
    report: dict[str, Any] = {"command": sys.argv, "setup": {}, "steps": []}
    env, test_paths = prepare(args, scratch, report["setup"])
    log = (args.out / "device.log").open("a")
    for name in chosen:
        left = args.budget - (time.monotonic() - started)
        limit = min(STEPS[name].limit * scale, left)
        if limit < 5:
            result = {"name": name, "status": "skipped", "reason": "the budget was spent"}
        else:
            step_env = {**env, "PYTHONPATH": os.pathsep.join(
                [*test_paths, env["PYTHONPATH"]] if name == "gpu_tests" else [env["PYTHONPATH"]])}
            result = run_child(args, name, limit, step_env, scratch, log)
        print(f"{name}: {result['status']} {result.get('reason', '')}".rstrip(), flush=True)
        report["steps"].append(result)
        report["seconds"] = round(time.monotonic() - started, 1)
        write_report(args.out, report)
    log.close()
    return 0 if all(s["status"] != "failed" for s in report["steps"]) else 1


def run_child(
    args: argparse.Namespace, name: str, limit: float, env: dict[str, str], scratch: Path, log: Any,
) -> dict[str, Any]:
    """Runs one step in its own process; its rows survive whatever ends it."""
    result_file = scratch / f"{name}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--step", name,
               "--result", str(result_file), "--seconds", str(args.seconds),
               "--workers", args.workers]
    log.write(f"\n===== {name} (limit {limit:.0f} s)\n")
    log.flush()
    began = time.monotonic()
    timed_out = False
    # A session of its own: a timeout ends the step's servers and clients too.
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        code = process.wait(limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        code = process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever the step left behind
    result: dict[str, Any] = {"name": name, "status": "failed", "rows": []}
    if result_file.is_file():
        result = json.loads(result_file.read_text())
    if timed_out:
        result.update(status="failed", reason=f"stopped at its limit of {limit:.0f} s; the rows "
                      "before that are kept")
    elif result["status"] == "running":
        result.update(status="failed", reason=f"the step's process ended with status {code} "
                      "(device.log has its output); the rows before that are kept")
    result["seconds"] = round(time.monotonic() - began, 1)
    return result


def prepare(
    args: argparse.Namespace, scratch: Path, setup: dict[str, Any],
) -> tuple[dict[str, str], list[str]]:
    """The steps' environment: onnx_serving importable from this checkout, the carried
    wheels installed, the CUDA libraries of the machine's pip packages findable."""
    root = scratch / "root" / "onnx_serving"
    root.mkdir(parents=True)
    for folder in _package_folders():
        (root / folder).symlink_to(REPO / folder)
    paths = [str(root.parent)]
    test_paths: list[str] = []
    if args.wheels:
        wheels = sorted(str(w) for w in args.wheels.glob("*.whl"))
        if args.parts:
            setup["onnxruntime-gpu"], wheel = assemble(args.parts, scratch)
            wheels += [wheel] if wheel else []
        target = scratch / "site"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
             "--no-compile", "--no-cache-dir", "--target", str(target), *wheels],
            capture_output=True, text=True)
        setup["installed"] = [Path(w).name for w in wheels] if not done.returncode else []
        if done.returncode:
            setup["install_error"] = done.stderr[-2000:]
        paths.append(str(target))
        if (args.wheels / "tfprotos").is_dir():
            test_paths.append(str(args.wheels / "tfprotos"))
    paths.append(str(REPO))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    libraries = _nvidia_libraries()
    if libraries:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [*libraries, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    setup["cuda_library_dirs"] = libraries
    return env, test_paths


def _package_folders() -> list[str]:
    """setup.py's FOLDERS: the folders installed as onnx_serving.<folder>."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "FOLDERS":
            return list(ast.literal_eval(node.value))
    raise RuntimeError("setup.py has no FOLDERS")


def _nvidia_libraries() -> list[str]:
    """The lib folders of the nvidia-* pip packages (CUDA 13's nvidia/cu13/lib, cuDNN's
    nvidia/cudnn/lib, ...) that this interpreter sees: PyTorch's CUDA, which
    onnxruntime-gpu's CUDA 13 build links against."""
    found: list[str] = []
    for packages in {*site.getsitepackages(), *sys.path}:
        base = Path(packages) / "nvidia"
        if base.is_dir():
            found += sorted(str(d) for d in base.glob("**/lib") if any(d.glob("*.so*")))
    return list(dict.fromkeys(found))


def assemble(parts: Path, scratch: Path) -> tuple[str, str | None]:
    """onnxruntime-gpu's wheel joined from ``<wheel>.part<i>of<n>`` files, checked against
    its ``<wheel>.sha256``: what was done, and the wheel (None when incomplete)."""
    found: dict[str, dict[int, Path]] = {}
    totals: dict[str, int] = {}
    for part in parts.glob("*.whl.part*of*"):
        match = re.fullmatch(r"(.+\.whl)\.part(\d+)of(\d+)", part.name)
        if match:
            found.setdefault(match[1], {})[int(match[2])] = part
            totals[match[1]] = int(match[3])
    if not found:
        return f"no parts in {parts}: onnxruntime-gpu not installed", None
    name, pieces = next(iter(found.items()))
    missing = sorted(set(range(1, totals[name] + 1)) - pieces.keys())
    if missing:
        return (f"{name}: parts {missing} of {totals[name]} missing (each earlier call copies "
                "one; a machine that went back between calls loses them)", None)
    wheel = scratch / name
    sha = hashlib.sha256()
    with wheel.open("wb") as out:
        for i in sorted(pieces):
            data = pieces[i].read_bytes()
            sha.update(data)
            out.write(data)
    expected = next(parts.glob(f"{name}.sha256"), None)
    if expected is not None and expected.read_text().split()[0] != sha.hexdigest():
        return f"{name}: joined parts do not match its sha256", None
    return f"{name}: joined from {totals[name]} parts, sha256 checked", str(wheel)


def write_report(out: Path, report: dict[str, Any]) -> None:
    (out / "device.json").write_text(json.dumps(report, indent=1, default=str))
    lines = ["# Device check", "", f"`{' '.join(report['command'])}`, "
             f"{report.get('seconds', 0):.0f} s", ""]
    for key, value in report["setup"].items():
        lines.append(f"- {key}: {value}")
    for step in report["steps"]:
        lines += ["", f"## {step['name']}: {step['status']}"
                  + (f" ({step['seconds']} s)" if "seconds" in step else ""), ""]
        if step.get("reason"):
            lines += [f"_{step['reason']}_", ""]
        for key, value in step.get("info", {}).items():
            lines.append(f"- {key}: {value}")
        rows = step.get("rows", [])
        if rows:
            columns = list(dict.fromkeys(k for row in rows for k in row))
            lines += ["", "| " + " | ".join(columns) + " |",
                      "| " + " | ".join("---" for _ in columns) + " |"]
            lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |"
                      for row in rows]
    (out / "device.md").write_text("\n".join(lines) + "\n")


def _cell(value: object) -> str:
    if isinstance(value, float):
        value = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


# --- a child: one step ---------------------------------------------------------------


class Context:
    """One step's arguments, scratch folder and result, saved after every change."""

    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.seconds: float = args.seconds
        self.workers: str = args.workers
        self.scratch = scratch
        self._file: Path = args.result
        self.result: dict[str, Any] = {"name": args.step, "status": "running", "rows": [],
                                       "info": {}}
        self.save()

    def info(self, key: str, value: object) -> None:
        self.result["info"][key] = value
        self.save()

    def row(self, **row: object) -> dict[str, object]:
        self.result["rows"].append(row)
        self.save()
        return row

    def attempt(self, label: dict[str, object], measure: Callable[[], dict[str, object]]) -> None:
        """One row: its figures, or why it has none (this machine lacks it, or it failed)."""
        try:
            self.row(**label, **measure())
        except Skip as exc:
            self.row(**label, note=f"skipped: {exc}")
        except Exception as exc:  # recorded as the row's finding; the step goes on
            traceback.print_exc()
            self.row(**label, note=f"failed: {type(exc).__name__}: {str(exc)[:300]}")

    def save(self) -> None:
        self._file.write_text(json.dumps(self.result, default=str))


def run_step(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix=f"device-{args.step}-") as tmp:
        context = Context(args, Path(tmp))
        try:
            STEPS[args.step].run(context)
            context.result["status"] = "ok"
        except Skip as exc:
            context.result.update(status="skipped", reason=str(exc))
        except Exception as exc:
            traceback.print_exc()
            context.result.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:500])
        context.save()
    return 0


def _providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _require(provider: str) -> None:
    if provider not in _providers():
        import onnxruntime as ort

        raise Skip(f"{provider} is not in this ONNX Runtime build ({ort.__version__}; "
                   "the providers step lists what is)")


# --- step: providers -----------------------------------------------------------------


def step_providers(context: Context) -> None:
    import ctypes
    from importlib.metadata import PackageNotFoundError, version

    import onnxruntime as ort

    from bench.suite.machine import describe, load_average

    context.info("machine", "; ".join(describe()) + f"; load {load_average()}")
    context.info("cores (affinity)", len(os.sched_getaffinity(0)))
    packages = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        with contextlib.suppress(PackageNotFoundError):
            packages.append(f"{name} {version(name)}")
    context.info("onnxruntime", f"{ort.__version__} from {Path(ort.__file__).parent} "
                 f"({', '.join(packages)}), device {ort.get_device()}")
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True)
        context.info("GPU", (smi.stdout or smi.stderr).strip())
    else:
        context.info("GPU", "no nvidia-smi on this machine")
    for provider in (CUDA, TENSORRT, CPU):
        context.row(what=provider, found="in this build" if provider in _providers()
                    else "not in this build")
    for library in ("libcuda.so.1", "libcudart.so.13", "libcublas.so.13", "libcudnn.so.9",
                    "libnvinfer.so.10"):
        try:
            ctypes.CDLL(library)
            context.row(what=library, found="loads")
        except OSError as exc:
            context.row(what=library, found=f"missing: {exc}")


# --- step: sessions through the server's builder ---------------------------------------


def step_sessions(context: Context) -> None:
    import numpy as np
    import onnx

    from bench.io_binding import mul_model
    from onnx_serving.server.runtime.config import Provider, RuntimeConfig
    from onnx_serving.server.runtime.graph import read_graph
    from onnx_serving.server.runtime.session import OnnxSession

    model, x = mul_model([4, 1])
    path = context.scratch / "model.onnx"
    onnx.save(model, path)
    graph = read_graph(path)
    wanted = {
        CUDA: Provider(CUDA, {"device_id": 0}),
        TENSORRT: Provider(TENSORRT, {"device_id": 0, "trt_engine_cache_enable": True}),
    }
    for name, provider in wanted.items():
        began = time.perf_counter()
        config = RuntimeConfig(providers=(provider, Provider(CPU)),
                               cache_dir=str(context.scratch / "cache"))
        try:
            session = OnnxSession(path, graph, config)
            y = session.run({"x": x}, ["y"])[0]
            context.row(provider=name, loaded="yes", session_providers=session.providers,
                        load_seconds=time.perf_counter() - began,
                        output_right=bool(np.array_equal(y, x * 2)))
        except Exception as exc:  # the builder's refusal is this row's finding
            context.row(provider=name, loaded="no", load_seconds=time.perf_counter() - began,
                        why=f"{type(exc).__name__}: {str(exc)[:400]}")


# --- steps: MobileNetV2 and bert_tiny --------------------------------------------------


@dataclass(frozen=True)
class Net:
    name: str
    build: Callable[[], Any]  # () -> onnx.ModelProto
    input: str
    output: str
    sample: Callable[[], Any]  # () -> one request's input, batch 1


def mobilenet_v2() -> Any:
    """MobileNetV2 (Sandler et al. 2018, Keras' layer table): NHWC in as a converted Keras
    model takes it, batch norm folded into the convolutions, random weights."""
    from onnx import TensorProto, helper

    g = _Graph()
    x = g.node("Transpose", ["image"], perm=[0, 3, 1, 2])
    x, channels = g.conv(x, 3, 32, 3, 2), 32
    x = g.relu6(x)
    for expand, out, repeat, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                                        (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                                        (6, 320, 1, 1)):
        for i in range(repeat):
            hidden, step = channels * expand, stride if i == 0 else 1
            h = g.relu6(g.conv(x, channels, hidden, 1, 1)) if expand != 1 else x
            h = g.relu6(g.conv(h, hidden, hidden, 3, step, group=hidden))
            h = g.conv(h, hidden, out, 1, 1)
            x = g.node("Add", [x, h]) if step == 1 and channels == out else h
            channels = out
    x = g.relu6(g.conv(x, channels, 1280, 1, 1))
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])])
    x = g.node("Gemm", [x, g.weight((1280, 1000)), g.weight((1000,), 0.0)])
    g.node("Softmax", [x], "probabilities", axis=-1)
    return g.model(
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 224, 224, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 1000])])


def bert_tiny() -> Any:
    """bench.suite.models' encoder: BERT's layout (token and learned position embeddings,
    post-norm layers of multi-head attention and a tanh-GELU FFN, a tanh pooler over the
    first token) at its sizes. Reshapes take constant shapes, so no shape math runs on
    the CPU and CUDA graphs can capture the whole run."""
    from onnx import TensorProto, helper

    from bench.suite.models import FFN, HEADS, HIDDEN, LAYERS, SEQ_LEN, VOCAB

    g = _Graph()
    head = HIDDEN // HEADS
    split, merge = g.const([0, 0, HEADS, head]), g.const([0, 0, HIDDEN])
    x = g.node("Gather", [g.weight((VOCAB, HIDDEN), 0.02), "input_ids"])
    x = g.norm(g.node("Add", [x, g.weight((SEQ_LEN, HIDDEN), 0.02)]), HIDDEN)
    for _ in range(LAYERS):
        def heads(perm: list[int], x: str = x) -> str:
            return g.node("Transpose", [g.node("Reshape", [g.dense(x, HIDDEN, HIDDEN), split])],
                          perm=perm)

        q, k, v = heads([0, 2, 1, 3]), heads([0, 2, 3, 1]), heads([0, 2, 1, 3])
        scores = g.node("Mul", [g.node("MatMul", [q, k]), g.const(head ** -0.5, float)])
        attended = g.node("MatMul", [g.node("Softmax", [scores], axis=-1), v])
        attended = g.node("Reshape", [g.node("Transpose", [attended], perm=[0, 2, 1, 3]), merge])
        x = g.norm(g.node("Add", [x, g.dense(attended, HIDDEN, HIDDEN)]), HIDDEN)
        ffn = g.dense(g.gelu(g.dense(x, HIDDEN, FFN)), FFN, HIDDEN)
        x = g.norm(g.node("Add", [x, ffn]), HIDDEN)
    first = g.node("Gather", [x, g.const(0)], axis=1)
    g.node("Tanh", [g.dense(first, HIDDEN, HIDDEN)], "pooled")
    return g.model(
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", SEQ_LEN])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", HIDDEN])])


class _Graph:
    """Nodes and random initializers, named in order: just enough to write a model."""

    def __init__(self) -> None:
        import numpy as np

        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.rng = np.random.default_rng(0)

    def _name(self) -> str:
        return f"t{len(self.nodes) + len(self.initializers)}"

    def node(self, op: str, inputs: list[str], output: str = "", **attributes: Any) -> str:
        from onnx import helper

        output = output or self._name()
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def _add(self, array: Any) -> str:
        from onnx import numpy_helper

        name = self._name()
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def weight(self, shape: tuple[int, ...], scale: float | None = None) -> str:
        """He-scaled by the fan-in (all but the first dimension of a conv) unless given."""
        import numpy as np

        fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
        scale = (2.0 / fan_in) ** 0.5 if scale is None else scale
        return self._add((self.rng.standard_normal(shape) * scale).astype(np.float32))

    def const(self, value: Any, kind: type = int) -> str:
        import numpy as np

        return self._add(np.array(value, np.int64 if kind is int else np.float32))

    def conv(self, x: str, c_in: int, c_out: int, kernel: int, stride: int,
             group: int = 1) -> str:
        w = self.weight((c_out, c_in // group, kernel, kernel))
        pad = kernel // 2
        return self.node("Conv", [x, w, self.weight((c_out,), 0.01)], kernel_shape=[kernel] * 2,
                         strides=[stride] * 2, pads=[pad] * 4, group=group)

    def relu6(self, x: str) -> str:
        return self.node("Clip", [x, self.const(0.0, float), self.const(6.0, float)])

    def dense(self, x: str, n_in: int, n_out: int) -> str:
        y = self.node("MatMul", [x, self.weight((n_in, n_out))])
        return self.node("Add", [y, self.weight((n_out,), 0.01)])

    def norm(self, x: str, width: int) -> str:
        import numpy as np

        return self.node("LayerNormalization", [x, self._add(np.ones(width, np.float32)),
                                                self._add(np.zeros(width, np.float32))],
                         axis=-1, epsilon=1e-3)

    def gelu(self, x: str) -> str:
        """tanh-approximated, as the Keras model (tf2onnx cannot convert the exact one)."""
        cube = self.node("Mul", [self.node("Mul", [x, x]), x])
        inner = self.node("Add", [x, self.node("Mul", [cube, self.const(0.044715, float)])])
        t = self.node("Tanh", [self.node("Mul", [inner, self.const((2 / 3.141592653589793)
                                                                   ** 0.5, float)])])
        half = self.node("Mul", [x, self.const(0.5, float)])
        return self.node("Mul", [half, self.node("Add", [t, self.const(1.0, float)])])

    def model(self, inputs: list[Any], outputs: list[Any]) -> Any:
        from onnx import checker, helper

        graph = helper.make_graph(self.nodes, "net", inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                  ir_version=8)
        checker.check_model(model)
        return model


def _image() -> Any:
    import numpy as np

    return np.random.default_rng(1).standard_normal((1, 224, 224, 3)).astype(np.float32)


def _ids() -> Any:
    import numpy as np

    from bench.suite.models import SEQ_LEN, VOCAB

    return np.random.default_rng(1).integers(0, VOCAB, (1, SEQ_LEN), np.int64)


NETS = {
    "mobilenet_v2": Net("mobilenet_v2", mobilenet_v2, "image", "probabilities", _image),
    "bert_tiny": Net("bert_tiny", bert_tiny, "input_ids", "pooled", _ids),
}


def step_net(name: str) -> Callable[[Context], None]:
    def run(context: Context) -> None:
        measure_net(context, NETS[name])

    return run


def measure_net(context: Context, net: Net) -> None:
    import onnx
    import onnxruntime as ort

    from bench.suite.load import run as load

    base = context.scratch / net.name
    (base / "1").mkdir(parents=True)
    path = base / "1" / "model.onnx"
    onnx.save(net.build(), path)
    x = net.sample()
    feeds = {net.input: x}
    context.info("model", f"{path.stat().st_size / 2**20:.1f} MiB ONNX, input {net.input} "
                 f"{list(x.shape)} {x.dtype}, built with onnx.helper (see bench/device.py)")
    reference: dict[tuple[str, int], dict[str, object]] = {}

    def figures(callers: Sequence[Callable[[], object]]) -> dict[str, object]:
        sample = load(callers, seconds=context.seconds, warmup=min(1.0, context.seconds / 2))
        if not sample.count:
            raise RuntimeError(f"no request succeeded: {sample.first_error}")
        return {"req/s": sample.throughput, "p50 ms": sample.percentile_ms(50),
                "p99 ms": sample.percentile_ms(99), "errors": sample.errors}

    def measure(contender: str, provider: str, clients: int,
                callers: Callable[[int], Sequence[Callable[[], object]]]) -> None:
        def go() -> dict[str, object]:
            row = figures(callers(clients))
            key = (provider, clients)
            if contender.startswith("ORT default"):
                reference[key] = row
            elif key in reference:
                base = reference[key]
                row["req/s vs ORT"] = float(row["req/s"]) / float(base["req/s"])  # type: ignore[arg-type]
                row["p50 vs ORT"] = float(row["p50 ms"]) / float(base["p50 ms"])  # type: ignore[arg-type]
            return row

        context.attempt({"contender": contender, "provider": provider, "clients": clients}, go)

    def ort_session(provider: str, options: dict[str, str] | None = None) -> Any:
        if provider != CPU:
            _require(provider)
        session = ort.InferenceSession(str(path), providers=[(provider, options or {})])
        if session.get_providers()[0] != provider:  # ONNX Runtime's own quiet fallback
            raise RuntimeError(f"{provider} did not initialize; ONNX Runtime runs on "
                               f"{session.get_providers()} instead (device.log has why)")
        return session

    for provider in (CPU, CUDA):
        try:
            session = ort_session(provider)
        except Exception as exc:  # each of its rows says why
            for clients in CLIENTS:
                context.attempt({"contender": "ORT default session", "provider": provider,
                                 "clients": clients}, _raise(exc))
            continue
        for clients in CLIENTS:
            measure("ORT default session", provider, clients,
                    partial(_repeat, partial(session.run, None, feeds)))
    for provider in (CPU, CUDA):
        try:
            with served(context, base, net, provider) as address:
                for clients in CLIENTS:
                    measure("server over gRPC", provider, clients,
                            partial(grpc_callers, address, net, x))
        except Exception as exc:  # the server's rows say why
            for clients in CLIENTS:
                context.attempt({"contender": "server over gRPC", "provider": provider,
                                 "clients": clients}, _raise(exc))
    for graph in (False, True):
        contender = "ORT CUDA graph + IO binding" if graph else "ORT IO binding, device memory"
        measure(contender, CUDA, 1, partial(_single, partial(bound_call, ort_session, net, x,
                                                             graph)))
    for binding in (False, True):
        contender = f"server session, {'IO binding' if binding else 'run()'}"
        measure(contender, CUDA, 1, partial(_single, partial(server_session_call, path, net, x,
                                                             binding)))


def _repeat(call: Callable[[], object], clients: int) -> list[Callable[[], object]]:
    """The same call for every client (ONNX Runtime's run is thread-safe)."""
    return [call] * clients


def _single(make: Callable[[], Callable[[], object]], _clients: int) -> list[Callable[[], object]]:
    return [make()]


def _raise(exc: Exception) -> Callable[[], dict[str, object]]:
    def again() -> dict[str, object]:
        raise exc

    return again


def bound_call(ort_session: Callable[..., Any], net: Net, x: Any, graph: bool) -> Callable[[], Any]:
    """run_with_iobinding with the input and output kept in device memory; with
    ``enable_cuda_graph`` the first run captures the graph and the others replay it."""
    import numpy as np
    import onnxruntime as ort

    session = ort_session(CUDA, {"enable_cuda_graph": "1"} if graph else {})
    shape = ort_session(CPU).run([net.output], {net.input: x})[0].shape
    x_device = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    y_device = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(net.input, x_device)
    binding.bind_ortvalue_output(net.output, y_device)
    session.run_with_iobinding(binding)  # the capture, with a graph
    return lambda: session.run_with_iobinding(binding)


def server_session_call(path: Path, net: Net, x: Any, binding: bool) -> Callable[[], None]:
    """A request's run through the server's session on CUDA (``lease``, as the servicer
    calls it), with or without its IO binding."""
    from onnx_serving.server.runtime.config import Provider, RuntimeConfig
    from onnx_serving.server.runtime.graph import read_graph
    from onnx_serving.server.runtime.session import OnnxSession

    _require(CUDA)
    config = RuntimeConfig(providers=(Provider(CUDA, {"device_id": 0}), Provider(CPU)),
                           io_binding=binding)
    session = OnnxSession(path, read_graph(path), config)
    feeds, outputs = {net.input: x}, [net.output]

    def call() -> None:
        with session.lease(feeds, outputs, outputs):
            pass

    return call


@contextlib.contextmanager
def served(context: Context, base: Path, net: Net, provider: str) -> Iterator[str]:
    """The real server (default flags) serving ``net`` on ``provider``: its address."""
    from tests.server_process import ServerProcess

    runtime = base / "1" / "runtime.json"
    runtime.unlink(missing_ok=True)
    if provider != CPU:
        _require(provider)
        runtime.write_text(json.dumps({"execution_providers": [provider, CPU]}))
    server = ServerProcess([f"--model_name={net.name}", f"--model_base_path={base}"],
                           context.scratch / f"{net.name}-{provider}.log").start(timeout=120)
    try:
        from onnx_serving.client import Client

        with Client(server.address) as client:
            [status] = client.status(net.name)
        if status.state != "AVAILABLE":
            raise RuntimeError(f"the server did not load it ({status.state}): "
                               f"{status.error_message}")
        yield server.address
    finally:
        server.stop()


def grpc_callers(address: str, net: Net, x: Any, clients: int) -> list[Callable[[], object]]:
    from onnx_serving.client import Client

    def caller() -> Callable[[], object]:
        client = Client(_channel(address))
        return lambda: client.predict(net.name, {net.input: x}, timeout=60)

    return [caller() for _ in range(clients)]


def _channel(address: str) -> Any:
    """A channel of its own connection (gRPC shares one between identical channels), so
    SO_REUSEPORT spreads the clients over the workers."""
    import grpc

    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1),
                                                   ("grpc.max_receive_message_length", -1)])


# --- step: CPU scaling over --num_workers ----------------------------------------------


def step_workers(context: Context) -> None:
    import multiprocessing

    from tests.server_process import ServerProcess

    cores = len(os.sched_getaffinity(0))
    counts = [int(w) for w in context.workers.split(",") if w] or [
        w for w in WORKER_COUNTS if w <= max(1, cores // 2)]
    processes = max(2, cores // 2)
    threads = 4
    model = REPO / "examples" / "models" / "half_plus_two"
    context.info("load", f"half_plus_two (examples/models), default flags; {processes} client "
                 f"processes x {threads} threads, one connection each; {cores} cores; worker "
                 f"counts {counts} (those up to half the cores)")
    spawn = multiprocessing.get_context("spawn")  # no gRPC state crosses a fork
    single: float | None = None
    # And one worker with every call handed to a worker thread: whether answering cheap
    # calls on the thread that receives them holds one process back on many cores.
    for workers, flags in [*((w, ()) for w in counts), (1, ("--inline_call_cpu_us=0",))]:
        def one(workers: int = workers, flags: tuple[str, ...] = flags) -> dict[str, object]:
            nonlocal single
            server = ServerProcess(["--model_name=half_plus_two", f"--model_base_path={model}",
                                    f"--num_workers={workers}", *flags],
                                   context.scratch / f"workers{workers}{len(flags)}.log",
                                   ).start(timeout=120)
            try:
                _wait_for_workers(server, workers)
                assert server.process is not None
                row = drive(spawn, server.address, server.process.pid, processes, threads,
                            context.seconds * 2)
            finally:
                server.stop()
            single = single or float(row["req/s"])  # type: ignore[arg-type]
            row["vs 1 worker"] = float(row["req/s"]) / single  # type: ignore[arg-type]
            return row

        context.attempt({"workers": workers, "cheap calls": "on a worker" if flags
                         else "where they arrive"}, one)


def _wait_for_workers(server: Any, workers: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while server.logs().count(READY) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{workers} workers not all serving after {timeout:.0f} s")
        time.sleep(0.1)


def drive(spawn: Any, address: str, pid: int, processes: int, threads: int,
          seconds: float) -> dict[str, object]:
    """Closed-loop load from client processes over one window: throughput, p50, and the
    CPU the server's processes and the whole machine spent in it."""
    import numpy as np

    window = spawn.Array("d", 2)
    go, results = spawn.Event(), spawn.Queue()
    clients = [spawn.Process(target=_client_process, args=(address, threads, window, go, results))
               for _ in range(processes)]
    for client in clients:
        client.start()
    for _ in clients:  # each has connected and sent a first request
        if results.get(timeout=60) != "ready":
            raise RuntimeError("a client process could not start")
    opens = time.monotonic() + 1.0  # a second's warm-up
    window[0], window[1] = opens, opens + seconds
    go.set()
    time.sleep(max(0.0, opens - time.monotonic()))
    server_before, machine_before = _tree_cpu(pid), _machine_cpu()
    time.sleep(max(0.0, opens + seconds - time.monotonic()))
    server_after, machine_after = _tree_cpu(pid), _machine_cpu()
    latencies: list[float] = []
    errors: list[str] = []
    for _ in clients:
        done, failed = results.get(timeout=120)
        latencies += done
        errors += failed
    for client in clients:
        client.join(30)
    if not latencies:
        raise RuntimeError(f"no request succeeded: {errors[:1]}")
    busy = (machine_after[0] - machine_before[0]) / (machine_after[1] - machine_before[1])
    server_cpu = server_after - server_before
    return {"req/s": len(latencies) / seconds,
            "p50 ms": float(np.percentile(latencies, 50) * 1000),
            "server CPU ms/req": server_cpu / len(latencies) * 1000,
            "server cores busy": server_cpu / seconds,
            "machine busy %": busy * 100, "errors": len(errors)}


def _client_process(address: str, threads: int, window: Any, go: Any, results: Any) -> None:
    import threading

    import numpy as np

    from onnx_serving.client import Client

    x = np.array([[1.0]], np.float32)
    clients = [Client(_channel(address)) for _ in range(threads)]
    for client in clients:
        client.predict("half_plus_two", {"x": x}, timeout=60)
    results.put("ready")
    go.wait()
    opens, closes = window[0], window[1]
    latencies: list[float] = []
    errors: list[str] = []

    def loop(client: Any) -> None:
        while (began := time.monotonic()) < closes:
            try:
                client.predict("half_plus_two", {"x": x}, timeout=60)
            except Exception as exc:  # counted: a failing server is a finding
                errors.append(str(exc)[:200])
                continue
            if opens <= (ended := time.monotonic()) <= closes:
                latencies.append(ended - began)

    running = [threading.Thread(target=loop, args=(c,)) for c in clients]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    results.put((latencies, errors))


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its children: --num_workers' workers."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(stat.parent.name) == pid or int(fields[1]) == pid:
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


# --- step: the GPU test subset ----------------------------------------------------------


def step_gpu_tests(context: Context) -> None:
    import xml.etree.ElementTree as ElementTree

    modules = [m for m in GPU_TESTS if (REPO / m).is_file()]
    if not modules:
        raise Skip(f"none of {GPU_TESTS} exists")
    report = context.scratch / "junit.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *modules, "-q", "-rs", "-p", "no:cacheprovider",
         f"--junitxml={report}"], cwd=REPO, capture_output=True, text=True)
    print(done.stdout[-20000:], done.stderr[-5000:])
    if not report.is_file():
        raise RuntimeError(f"pytest wrote no report (status {done.returncode}): "
                           f"{(done.stdout + done.stderr)[-600:]}")
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for case in ElementTree.parse(report).iter("testcase"):
        outcome = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        state = "passed" if outcome is None else (
            "skipped" if outcome.tag == "skipped" else "failed")
        counts[state] += 1
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        if state != "passed" or re.search(r"cuda|gpu|tensorrt|provider", name, re.I):
            why = "" if outcome is None else (outcome.get("message") or "")[:300]
            context.row(test=name, outcome=state, why=why)
    context.info("modules", " ".join(modules))
    context.info("outcome", ", ".join(f"{v} {k}" for k, v in counts.items()))
    if counts["failed"]:
        raise RuntimeError(f"{counts['failed']} tests failed (rows below; device.log has "
                           "pytest's output)")


STEPS: dict[str, Step] = {
    "providers": Step(step_providers, 20),
    "sessions": Step(step_sessions, 45),
    "mobilenet_v2": Step(step_net("mobilenet_v2"), 110),
    "bert_tiny": Step(step_net("bert_tiny"), 95),
    "workers": Step(step_workers, 100),
    "gpu_tests": Step(step_gpu_tests, 80),
}


if __name__ == "__main__":
    sys.exit(main())
