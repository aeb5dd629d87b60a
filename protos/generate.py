"""Regenerates the Python modules beside the ``.proto`` files.

Run ``python -m onnx_serving.protos.generate`` after editing a ``.proto``.
protoc's output is rewritten in two ways: imports point into
``onnx_serving.protos`` instead of TensorFlow's own packages, and files
register in our private descriptor pool (see ``_pool.py``). The test suite
regenerates into a temporary folder and fails when the committed modules
differ.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE = "onnx_serving.protos"
# The proto packages we ship: TF Serving's, and the Open Inference Protocol's (KServe v2).
_TOP_LEVEL = ("tensorflow", "tensorflow_serving", "inference")
_IMPORT = re.compile(rf"^(from|import) ({'|'.join(_TOP_LEVEL)})([. ])", re.MULTILINE)
_MODULE_NAME = re.compile(rf"\(DESCRIPTOR, '((?:{'|'.join(_TOP_LEVEL)})\.[\w.]+)'")
_POOL_IMPORT = f"from {PACKAGE}._pool import POOL as _POOL\n"


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*.proto"))


def _rewrite(text: str) -> str:
    text = _IMPORT.sub(rf"\1 {PACKAGE}.\2\3", text)
    text = _MODULE_NAME.sub(rf"(DESCRIPTOR, '{PACKAGE}.\1'", text)
    if "_descriptor_pool.Default()" in text:
        text = text.replace("_descriptor_pool.Default()", "_POOL")
        text = text.replace(
            "from google.protobuf.internal import builder as _builder\n",
            "from google.protobuf.internal import builder as _builder\n" + _POOL_IMPORT,
        )
    return text


def generate(out_dir: Path, root: Path = PROTO_ROOT) -> list[Path]:
    """Writes the generated modules under ``out_dir``; returns their paths relative to it."""
    protos = [str(p) for p in proto_files(root)]
    with tempfile.TemporaryDirectory() as raw:
        cmd = [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{root}",
            f"--python_out={raw}", f"--pyi_out={raw}", f"--grpc_python_out={raw}", *protos,
        ]
        subprocess.run(cmd, check=True, cwd=root)
        written: list[Path] = []
        for path in sorted(Path(raw).rglob("*.py*")):
            text = path.read_text()
            # protoc writes a _grpc module for every file; keep those with services.
            if path.name.endswith("_pb2_grpc.py") and "class " not in text:
                continue
            rel = path.relative_to(raw)
            target = out_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_rewrite(text))
            written.append(rel)
        for package_dir in {p.parent for p in written}:
            for part in [package_dir, *package_dir.parents][:-1]:
                init = out_dir / part / "__init__.py"
                if not init.exists():
                    init.write_text("")
                    written.append(part / "__init__.py")
    return sorted(set(written))


if __name__ == "__main__":
    for rel in generate(PROTO_ROOT):
        print(rel)
