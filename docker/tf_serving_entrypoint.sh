#!/bin/sh
# The image's entrypoint, as tensorflow/serving's: serves ${MODEL_BASE_PATH}/${MODEL_NAME}
# on gRPC 8500 and REST 8501; flags given after the image name are appended (and, given
# twice, the later one wins).
exec onnx-serving serve --port=8500 --rest_api_port=8501 \
  --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"
