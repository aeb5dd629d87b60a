"""``onnx-serving convert``: a TF Serving repository of SavedModels → an onnx-serving one.

    onnx-serving convert SAVED_MODEL_BASE_PATH ONNX_BASE_PATH
    onnx-serving convert --model_config_file=models.config --output_dir=DIR [--update_config]

Every numeric version directory is converted, every signature of the
``serve`` tag (or those named) through tf2onnx, and checked against
TensorFlow on the same inputs before it is written. A version is published
the way docs/lifecycle.md asks: written beside its place and renamed in
once whole, so a server polling the output never sees half of one, and only
once its warmup requests pass the server's own checks. Names are kept
(signature names, method names, input and output keys, dtypes and shapes, in
``signatures.json``), so clients need no change.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import onnx
from google.protobuf import text_format

from onnx_serving.codec.served_model import DEFAULT_SIGNATURE, SIGNATURES_FILE, WARMUP_FILE
from onnx_serving.migration import transforms
from onnx_serving.migration.graph_cut import (
    Cut,
    CutError,
    GraphSession,
    cut,
    freeze_function,
    needs_cut,
    parses_in_functions,
    records_other_shapes,
)
from onnx_serving.migration.image_decoding import with_sample_images
from onnx_serving.migration.saved_model import (
    SavedModelError,
    SignatureSig,
    TensorFlowRunner,
    TensorSig,
    quiet_cuda_probe,
    read_signatures,
)
from onnx_serving.migration.served_config import write_config
from onnx_serving.migration.served_session import ServedModelError, ServedSession
from onnx_serving.migration.shape_leniency import widen_inputs
from onnx_serving.migration.tf2onnx_runner import (
    ConversionError,
    convert_graph_def,
    convert_signature,
)
from onnx_serving.migration.validate import Validation, sample_inputs, validate
from onnx_serving.protos.tensorflow_serving.config import model_server_config_pb2
from onnx_serving.server.errors import ServingError
from onnx_serving.server.runtime.config import RuntimeConfig
from onnx_serving.server.runtime.model import load as load_version
from onnx_serving.server.runtime.ort_errors import ORT_ERRORS
from onnx_serving.server.runtime.signature import write_signature_file
from onnx_serving.server.warmup import WarmupOptions, warm_up

# What loading or running a converted model may raise.
_RUN_ERRORS: tuple[type[Exception], ...] = (*ORT_ERRORS, ServedModelError)


@dataclass(frozen=True)
class Options:
    opset: int = 17
    tag: str = "serve"
    signatures: tuple[str, ...] = ()  # empty: every signature
    large_model: bool = False
    optimize: bool = False
    quantize: str | None = None  # "dynamic"
    fp16: bool = False
    atol: float = 1e-4
    rtol: float = 1e-3
    samples: int = 4
    seed: int = 0
    overwrite: bool = False
    allow_partial: bool = False


@dataclass
class Result:
    model: str
    version: int
    status: str = "converted"  # converted, partial, skipped, failed
    signatures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    max_abs: float = 0.0
    max_rel: float = 0.0
    size_before: int = 0
    size_after: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "partial")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def version_dirs(base: Path) -> dict[int, Path]:
    return {
        int(p.name): p for p in sorted(base.iterdir())
        if p.is_dir() and p.name.isascii() and p.name.isdigit()
    } if base.is_dir() else {}


def convert_model(name: str, saved_base: Path, onnx_base: Path, options: Options) -> list[Result]:
    versions = version_dirs(saved_base)
    if not versions:
        result = Result(name, -1, "failed", problems=[f"no numbered version under {saved_base}"])
        log(f"[{name}] {result.problems[0]}")
        return [result]
    onnx_base.mkdir(parents=True, exist_ok=True)
    return [
        convert_version(name, version, path, onnx_base / str(version), options)
        for version, path in versions.items()
    ]


def convert_version(
    model: str, version: int, saved_dir: Path, target: Path, options: Options
) -> Result:
    result = Result(model, version, size_before=_size(saved_dir))
    where = f"[{model}/{version}]"
    if (target / SIGNATURES_FILE).exists() and not options.overwrite:
        result.status, result.size_after = "skipped", _size(target)
        log(f"{where} already converted; skipped (--overwrite converts it again)")
        return result
    started = time.monotonic()
    staging = target.parent / f".converting-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        entries = _convert_signatures(where, saved_dir, staging, options, result)
        result.status = "failed"
        if entries and (not result.problems or options.allow_partial):
            _stage(saved_dir, staging, entries)
            refusal = _warmup_refusal(saved_dir, staging)
            if refusal is None:
                _publish(staging, target)
                result.size_after = _size(target)
                result.status = "partial" if result.problems else "converted"
            else:
                result.problems.append(refusal)
                log(f"{where} {refusal}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.seconds = time.monotonic() - started
    log(f"{where} {result.status} in {result.seconds:.1f} s")
    return result


def _convert_signatures(
    where: str, saved_dir: Path, staging: Path, options: Options, result: Result
) -> dict[str, dict[str, object]]:
    """Signature name → its signatures.json entry, for those that converted and validated."""
    try:
        signatures = read_signatures(saved_dir, options.tag)
    except SavedModelError as exc:
        result.problems.append(str(exc))
        return {}
    unknown = set(options.signatures) - set(signatures)
    if unknown:
        result.problems.append(f"no signature {sorted(unknown)}; it has {sorted(signatures)}")
        return {}
    runner = TensorFlowRunner(saved_dir, options.tag)
    chosen = [_with_graph_dtypes(where, runner, signatures[n], result)
              for n in (options.signatures or signatures)]
    # tf2onnx cannot load a SavedModel one of whose signatures records shapes its graph
    # cannot have: each signature is then cut from the graph TF Serving runs.
    loadable = not any(records_other_shapes(runner, s) for s in signatures.values())
    entries: dict[str, dict[str, object]] = {}
    # Computation → the signature converted for it, its file and graph cut; or the
    # signature that failed it (converting it again would fail alike, minutes later).
    converted: dict[Hashable, tuple[str, str, Cut | None]] = {}
    failed: dict[Hashable, str] = {}
    for signature in chosen:
        computation = signature.computation
        if computation in failed:
            result.problems.append(f"signature {signature.name}: computes what signature "
                                   f"{failed[computation]} does, which did not convert")
            continue
        shared = converted.get(computation)
        if shared is not None:
            same, file, cut_graph = shared
            log(f"{where} signature {signature.name} computes what {same} does: "
                f"it shares {file}")
        else:
            file = _file_name(signature, chosen)
            log(f"{where} converting signature {signature.name} with tf2onnx "
                f"(opset {options.opset})")
            try:
                cut_graph = _tf2onnx(runner, saved_dir, signature, staging / file, options,
                                     loadable=loadable)
            except (CutError, ConversionError) as exc:
                ops = f"; unsupported ops: {', '.join(exc.unsupported_ops)}" \
                    if isinstance(exc, ConversionError) and exc.unsupported_ops else ""
                result.problems.append(f"signature {signature.name}: {exc}{ops}")
                log(f"{where} signature {signature.name} cannot be converted: {exc}{ops}")
                failed[computation] = signature.name
                continue
        entry = _validated_entry(where, runner, saved_dir, staging, file, signature, options,
                                 cut_graph, result, new=shared is None)
        if entry is not None:
            entries[signature.name] = entry
            result.signatures.append(signature.name)
            converted.setdefault(computation, (signature.name, file, cut_graph))
        elif shared is None:
            failed[computation] = signature.name
    return entries


def _with_graph_dtypes(
    where: str, runner: TensorFlowRunner, signature: SignatureSig, result: Result
) -> SignatureSig:
    """The signature with each tensor's dtype as the graph has it, noted where the
    SignatureDef records another. TF Serving never checks a TensorInfo's dtype (its
    saved_model_half_plus_three records the serialized tf.Example input of its regress
    signature as DT_FLOAT): clients send what the graph takes, which the server checks."""
    def graph_dtype(spec: TensorSig) -> TensorSig:
        dtype = int(runner.graph.get_tensor_by_name(spec.name).dtype.as_datatype_enum)
        if dtype == spec.dtype:
            return spec
        graph_spec = replace(spec, dtype=dtype)
        result.notes.append(f"signature {signature.name}: {spec.alias} is recorded as "
                            f"{spec.dtype_name}, but its tensor {spec.name} is "
                            f"{graph_spec.dtype_name}: the converted signature says "
                            f"{graph_spec.dtype_name}")
        log(f"{where} {result.notes[-1]}")
        return graph_spec

    return replace(
        signature,
        inputs={a: graph_dtype(s) for a, s in signature.inputs.items()},
        outputs={a: graph_dtype(s) for a, s in signature.outputs.items()},
    )


def _validated_entry(
    where: str, runner: TensorFlowRunner, saved_dir: Path, staging: Path, file: str,
    signature: SignatureSig, options: Options, cut_graph: Cut | None, result: Result,
    *, new: bool,
) -> dict[str, object] | None:
    """The signature's signatures.json entry once its ONNX file answers as TensorFlow does,
    else None with the problem in ``result``. A ``new`` file (not one another signature
    shares) is transformed first, and its inputs widened after where TensorFlow takes
    other shapes."""
    try:
        if new:
            _apply_transforms(staging / file, options)
        checked = _check(runner, saved_dir, staging / file, signature, options, cut_graph)
    except _RUN_ERRORS as exc:
        result.problems.append(
            f"signature {signature.name}: ONNX Runtime cannot run the converted model: {exc}"
        )
        return None
    except runner.errors as exc:
        result.problems.append(
            f"signature {signature.name}: TensorFlow refused a validation input "
            f"(give warmup requests instead): {exc}"
        )
        return None
    if checked is None:
        result.problems.append(f"signature {signature.name}: its ONNX names do not match")
        return None
    validation, names, shaped = checked
    result.max_abs = max(result.max_abs, validation.max_abs)
    result.max_rel = max(result.max_rel, validation.max_rel)
    log(f"{where} signature {signature.name}: {validation.samples} {validation.source} "
        f"inputs, max abs error {validation.max_abs:.3g}, max rel {validation.max_rel:.3g}")
    if validation.constant:
        result.notes.append(
            f"signature {signature.name}: TensorFlow answered every validation input alike, "
            "so agreement proves little; validate with real inputs (warmup requests)"
        )
        log(f"{where} warning: {result.notes[-1]}")
    if not validation.passed:
        worst = {a: e for a, e in validation.outputs.items() if e.mismatch or e.outside}
        detail = "; ".join(
            f"{a}: {e.mismatch or f'{e.outside} values off (max abs {e.max_abs:.3g})'}"
            for a, e in worst.items()
        )
        result.problems.append(
            f"signature {signature.name} disagrees with TensorFlow beyond atol "
            f"{options.atol} / rtol {options.rtol}: {detail}"
        )
        return None
    if new:
        parse = cut_graph.parse if cut_graph else None
        widened = widen_inputs(
            staging / file, runner, shaped, names, atol=options.atol, rtol=options.rtol,
            skip=frozenset([parse["input"]] if parse else []),
        )
        for alias, how in widened.items():
            log(f"{where} signature {signature.name}: input {alias} takes {how}, "
                "as TF Serving's graph does")
    return _signature_entry(signature, file, names, cut_graph)


def _file_name(signature: SignatureSig, chosen: Sequence[SignatureSig]) -> str:
    """model.onnx for the default signature's computation (or the only one), else the
    signature's name."""
    default = next((s.computation for s in chosen if s.name == DEFAULT_SIGNATURE), None)
    if len({s.computation for s in chosen}) == 1 or signature.computation == default:
        return "model.onnx"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in signature.name)
    return f"{safe}.onnx"


def _tf2onnx(
    runner: TensorFlowRunner, saved_dir: Path, signature: SignatureSig, target: Path,
    options: Options, *, loadable: bool,
) -> Cut | None:
    """tf2onnx on the signature, or on its graph cut after tf.Example parsing and at
    intermediate inputs (graph_cut.py) when it needs one, or when tf2onnx cannot load the
    SavedModel (not ``loadable``); returns the cut."""
    source: GraphSession = runner
    if loadable and not needs_cut(runner, signature) and parses_in_functions(runner):
        source, signature = freeze_function(saved_dir, options.tag, signature)
    if loadable and not needs_cut(source, signature):
        convert_signature(saved_dir, signature.name, target, tag=options.tag,
                          opset=options.opset, large_model=options.large_model)
        return None
    cut_graph = cut(source, signature)
    graph_def = target.with_suffix(".pb")
    graph_def.write_bytes(cut_graph.graph_def)
    try:
        convert_graph_def(graph_def, cut_graph.input_tensors, list(cut_graph.outputs.values()),
                          target, opset=options.opset, large_model=options.large_model,
                          tables=cut_graph.tables)
    finally:
        graph_def.unlink()
    cut_graph.outputs = transforms.restore_output_names(
        target, cut_graph.outputs, cut_graph.tf_outputs
    )
    return cut_graph


def _apply_transforms(model: Path, options: Options) -> None:
    if options.fp16:
        transforms.to_fp16(model)
    if options.quantize == "dynamic":
        transforms.quantize_dynamic(model)
    if options.optimize:
        transforms.optimize(model)


def _check(
    runner: TensorFlowRunner, saved_dir: Path, model: Path, signature: SignatureSig,
    options: Options, cut_graph: Cut | None,
) -> tuple[Validation, dict[str, str], SignatureSig] | None:
    """The validation, alias → ONNX name, and the signature with the shapes its inputs
    were validated at (``_with_graph_shapes``); None if the ONNX names do not match."""
    graph = onnx.load(str(model), load_external_data=False).graph
    initialized = {i.name for i in graph.initializer}
    inputs = {v.name for v in graph.input if v.name not in initialized}
    outputs = {v.name for v in graph.output}
    parse = cut_graph.parse if cut_graph else None
    names: dict[str, str] = {}
    for specs, available in ((signature.inputs, inputs), (signature.outputs, outputs)):
        for alias, spec in specs.items():
            if parse is not None and alias == parse["input"]:
                continue  # parsed by the server: not a graph input
            found = next(
                (n for n in _candidates(alias, spec, cut_graph) if n in available), None
            )
            if found is None:
                return None
            names[alias] = found
    session = ServedSession(model)
    shaped = _with_graph_shapes(signature, names, graph)
    source, samples = sample_inputs(saved_dir, shaped, options.samples, options.seed, parse)
    images = {a: session.decodings[n] for a, n in names.items() if n in session.decodings}
    if images:
        source, samples = "generated image", with_sample_images(samples, images, options.seed)
    validation = validate(runner, session, signature, names, samples, source,
                          atol=options.atol, rtol=options.rtol, parse=parse)
    return validation, names, shaped


def _with_graph_shapes(
    signature: SignatureSig, names: Mapping[str, str], graph: onnx.GraphProto
) -> SignatureSig:
    """The signature with its inputs shaped as the graph takes them, where the signature
    says nothing (unknown rank, as TF1 exports often leave it) or something the graph
    cannot take: a SignatureDef's TensorInfo shape is a record, never checked by TF
    Serving (its Predict feeds the request's tensor to the graph as it is). TF Serving's
    saved_model_half_plus_three records ``x`` as a scalar over a tensor of shape [-1, 1]
    (its TensorInfo has no tensor_shape), and its clients send [1]. Random validation
    inputs, and the shape probes after, then fit the graph."""
    shapes = {
        v.name: tuple(d.dim_value if d.HasField("dim_value") else -1
                      for d in v.type.tensor_type.shape.dim)
        for v in graph.input if v.type.tensor_type.HasField("shape")
    }
    inputs = {
        alias: spec if names.get(alias) not in shapes
        or _fits(spec.shape, shapes[names[alias]])
        else replace(spec, shape=shapes[names[alias]])
        for alias, spec in signature.inputs.items()
    }
    return replace(signature, inputs=inputs)


def _fits(declared: tuple[int, ...] | None, graph: tuple[int, ...]) -> bool:
    """Whether every tensor of the declared shape (-1: any size) fits the graph's."""
    return declared is not None and len(declared) == len(graph) and all(
        g < 0 or d == g for d, g in zip(declared, graph, strict=True)
    )


def _candidates(alias: str, spec: TensorSig, cut_graph: Cut | None) -> list[str]:
    """tf2onnx names a signature's tensors after their keys; older versions after the graph;
    a cut graph's by their tensor names."""
    if cut_graph is not None:
        return [{**cut_graph.inputs, **cut_graph.outputs}.get(alias, spec.name)]
    return [alias, spec.name, spec.name.split(":")[0]]


def _signature_entry(
    signature: SignatureSig, file: str, names: dict[str, str], cut_graph: Cut | None
) -> dict[str, object]:
    def tensors(specs: Mapping[str, TensorSig]) -> dict[str, object]:
        return {
            alias: {
                "name": names.get(alias, spec.name),  # the examples input keeps its TF name
                "dtype": spec.dtype_name,
                "tensor_shape": None if spec.shape is None else list(spec.shape),
            }
            for alias, spec in specs.items()
        }

    entry: dict[str, object] = {
        "method_name": signature.method_name,
        "model_file": file,
        "inputs": tensors(signature.inputs),
        "outputs": tensors(signature.outputs),
    }
    if cut_graph is not None and cut_graph.parse is not None:
        entry["parse_example"] = cut_graph.parse
    return entry


def _stage(saved_dir: Path, staging: Path, entries: dict[str, dict[str, object]]) -> None:
    write_signature_file(staging / SIGNATURES_FILE, entries)
    warmup = saved_dir / WARMUP_FILE
    if warmup.exists():
        (staging / WARMUP_FILE).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(warmup, staging / WARMUP_FILE)


def _warmup_refusal(saved_dir: Path, staging: Path) -> str | None:
    """Why the server would refuse the staged version at warmup, or None.

    TF Serving fails the load of a version whose warmup records fail (and so does the
    server, server/app.py's ``_load``), so the staged version is loaded and its warmup
    replayed with the server's own code: input keys, dtypes and shapes are checked as
    requests will be. The records are read from the SavedModel, so messages name them.
    """
    if not (staging / WARMUP_FILE).exists():
        return None
    try:
        model = load_version(staging, RuntimeConfig())
        try:
            warm_up(model, saved_dir, WarmupOptions())
        finally:
            model.close()
    except ServingError as exc:
        return (f"its warmup requests do not fit the converted signatures, so the server "
                f"would refuse the version: {exc.message}. Correct or remove "
                f"{saved_dir / WARMUP_FILE}")
    return None


def _publish(staging: Path, target: Path) -> None:
    if target.exists():  # --overwrite
        shutil.rmtree(target)
    staging.rename(target)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def convert_config(
    config_file: Path, output_dir: Path, options: Options, *, update_config: bool = False
) -> list[Result]:
    """Every model of a TF Serving config, and the matching onnx-serving config
    (served_config.py says where it goes)."""
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(config_file.read_text(), config)
    results: list[Result] = []
    failed: set[str] = set()
    for model in config.model_config_list.config:
        saved_base = Path(model.base_path)
        if not saved_base.is_absolute():
            saved_base = config_file.parent / saved_base
        onnx_base = (output_dir / model.name).absolute()
        converted = convert_model(model.name, saved_base, onnx_base, options)
        if any(r.status == "failed" for r in converted):
            failed.add(model.name)
            log(f"[{model.name}] a version failed: the served config keeps its entry as it was")
        results += converted
        model.base_path = str(onnx_base)
        model.model_platform = "onnx"
    log(write_config(output_dir / "models.config", config, failed, update=update_config))
    return results


def summary(results: Sequence[Result]) -> str:
    lines = [
        "| model | version | status | signatures | max abs error | max rel error "
        "| size before | size after | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.version} | {r.status} | {', '.join(r.signatures) or '-'} "
            f"| {r.max_abs:.3g} | {r.max_rel:.3g} | {_megabytes(r.size_before)} "
            f"| {_megabytes(r.size_after)} | {r.seconds:.1f} |"
        )
    for r in results:
        lines += [f"- {r.model}/{r.version}: {p}" for p in r.problems]
        lines += [f"- {r.model}/{r.version} (note): {n}" for n in r.notes]
    return "\n".join(lines)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size else "-"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="onnx-serving convert", description=__doc__)
    parser.add_argument("saved_model_base_path", nargs="?", type=Path)
    parser.add_argument("onnx_base_path", nargs="?", type=Path)
    parser.add_argument("--model_config_file", type=Path)
    parser.add_argument("--output_dir", type=Path)
    parser.add_argument("--update_config", action="store_true",
                        help="with --model_config_file: write the converted models into "
                             "OUTPUT_DIR/models.config even if it exists (a server polling "
                             "it rolls them out); otherwise they go to "
                             "models.config.suggested beside it")
    parser.add_argument("--model_name", default="", help="for the summary (default: folder name)")
    parser.add_argument("--opset", type=int, default=Options.opset)
    parser.add_argument("--tag", "--saved_model_tags", dest="tag", default=Options.tag,
                        help="the tag of the MetaGraph converted (default serve); "
                             "--saved_model_tags is tensorflow_model_server's name for it")
    parser.add_argument("--signatures", default="", help="comma-separated; default: all")
    parser.add_argument("--large_model", action="store_true",
                        help="models over 2 GB: weights as external data files")
    parser.add_argument("--optimize", action="store_true",
                        help="save ONNX Runtime's offline graph optimization as the model")
    parser.add_argument("--quantize", choices=["dynamic"], help="int8 weights, for CPU")
    parser.add_argument("--fp16", action="store_true", help="float16 weights, for GPU")
    parser.add_argument("--atol", type=float, default=Options.atol)
    parser.add_argument("--rtol", type=float, default=Options.rtol)
    parser.add_argument("--validation_samples", type=int, default=Options.samples,
                        help="random inputs per signature when there are no warmup requests")
    parser.add_argument("--seed", type=int, default=Options.seed)
    parser.add_argument("--overwrite", action="store_true",
                        help="convert versions already in the output again")
    parser.add_argument("--allow_partial", action="store_true",
                        help="write a version even if some of its signatures failed")
    args = parser.parse_args(argv)
    if "," in args.tag:
        parser.error(f"--saved_model_tags={args.tag}: tf2onnx converts a MetaGraph named by "
                     "one tag")
    by_config = args.model_config_file is not None
    if by_config != (args.output_dir is not None) or by_config == (
        args.saved_model_base_path is not None
    ) or (not by_config and args.onnx_base_path is None):
        parser.error("give SAVED_MODEL_BASE_PATH ONNX_BASE_PATH, "
                     "or --model_config_file and --output_dir")
    if args.update_config and not by_config:
        parser.error("--update_config goes with --model_config_file")
    return args


def main(argv: Sequence[str]) -> int:
    quiet_cuda_probe()
    args = parse_args(argv)
    options = Options(
        opset=args.opset, tag=args.tag,
        signatures=tuple(s for s in args.signatures.split(",") if s),
        large_model=args.large_model, optimize=args.optimize, quantize=args.quantize,
        fp16=args.fp16, atol=args.atol, rtol=args.rtol, samples=args.validation_samples,
        seed=args.seed, overwrite=args.overwrite, allow_partial=args.allow_partial,
    )
    if args.model_config_file is not None:
        results = convert_config(args.model_config_file, args.output_dir, options,
                                 update_config=args.update_config)
    else:
        name = args.model_name or args.saved_model_base_path.name
        results = convert_model(name, args.saved_model_base_path, args.onnx_base_path, options)
    print(summary(results))
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
