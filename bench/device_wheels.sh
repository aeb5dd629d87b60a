#!/usr/bin/env bash
# Fills the folders bench/device.py carries to the device machine (docs/performance.md,
# "Device check"); /.whl/ is git-ignored. Run here, where pip reaches PyPI:
#
#   bash bench/device_wheels.sh            # PYTHON=... picks the venv whose versions to pin
#
# .whl/device/        the server's dependencies the device image lacks or may hold older
#                     (pinned to the versions installed here, so the device runs what the
#                     tests ran), tensorflow-serving-api for the tests, and tfprotos/: the
#                     generated *_pb2.py of TensorFlow's protos, copied from the TensorFlow
#                     installed here, which is all the tests use of TensorFlow (its 600 MB
#                     wheel cannot travel). Under 64 MiB: one call carries it.
# .whl/ortgpu/<i>/    onnxruntime-gpu's wheel (about 256 MB, CUDA 13) cut into parts of at
#                     most CHUNK_MIB, one call's carry each, with the whole wheel's sha256.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
PYVER=${PYVER:-3.12}
CHUNK_MIB=${CHUNK_MIB:-61}
DEST=$(realpath -m "${DEST:-.whl}")  # where device/ and ortgpu/ go
ORT_GPU=${ORT_GPU:-onnxruntime-gpu}  # e.g. onnxruntime-gpu==1.31.1
# Already in the device image (KINDS.md's package list), in versions the server accepts.
ON_DEVICE="numpy onnx ml_dtypes uvloop"

download() {
    local dest=$1; shift
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 --platform any -d "$dest" "$@"
}

# pyproject's dependencies less those on the device, at the versions installed here.
pins=$("$PYTHON" - "$ON_DEVICE" <<'EOF'
import re, sys, tomllib
from importlib.metadata import version
skip = {n.replace("_", "-") for n in sys.argv[1].split()}
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
names = [re.match(r"[A-Za-z0-9_.-]+", d).group(0).replace("_", "-") for d in deps]
names.append("tensorflow-serving-api")
print(" ".join(f"{n}=={version(n)}" for n in names if n.lower() not in skip))
EOF
)
rm -rf "$DEST/device" && mkdir -p "$DEST/device"
# shellcheck disable=SC2086
download "$DEST/device" $pins

tf=$("$PYTHON" -c "import importlib.util as u; print(u.find_spec('tensorflow').origin)")
mkdir -p "$DEST/device/tfprotos"
(cd "$(dirname "$tf")/.." && find tensorflow -name '*_pb2.py' -print0 \
    | xargs -0 cp --parents -t "$DEST/device/tfprotos")

rm -rf "$DEST/ortgpu" && mkdir -p "$DEST/ortgpu/all"
download "$DEST/ortgpu/all" "$ORT_GPU"
wheel=$(cd "$DEST/ortgpu/all" && ls onnxruntime_gpu-*.whl)
size=$(stat -c %s "$DEST/ortgpu/all/$wheel")
chunk=$((CHUNK_MIB << 20))
parts=$(( (size + chunk - 1) / chunk ))
each=$(( (size + parts - 1) / parts ))
sum=$(sha256sum "$DEST/ortgpu/all/$wheel" | cut -d' ' -f1)
for i in $(seq 1 "$parts"); do
    mkdir -p "$DEST/ortgpu/$i"
    dd if="$DEST/ortgpu/all/$wheel" of="$DEST/ortgpu/$i/$wheel.part${i}of$parts" bs=1M \
        iflag=skip_bytes,count_bytes skip=$(( (i - 1) * each )) count="$each" status=none
    echo "$sum" > "$DEST/ortgpu/$i/$wheel.sha256"
done
rm -rf "$DEST/ortgpu/all"
du -sh "$DEST/device" "$DEST"/ortgpu/*
echo "$wheel: $size bytes in $parts parts of at most $each bytes"
