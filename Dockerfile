# CPU image with TF Serving's Docker conventions: gRPC on 8500, REST on 8501, and
# the model at ${MODEL_BASE_PATH}/${MODEL_NAME}, e.g.
#   docker run -p 8500:8500 -p 8501:8501 -v /path/to/half_plus_two:/models/half_plus_two \
#     -e MODEL_NAME=half_plus_two onnx-serving
# Flags after the image name reach the server, as with tensorflow/serving.
FROM python:3.11-slim

WORKDIR /opt/onnx-serving
COPY pyproject.toml setup.py README.md ./
COPY protos protos
COPY server server
COPY client client
COPY codec codec
RUN pip install --no-cache-dir '.[cpu]' \
 && printf '%s\n' '#!/bin/sh' \
    'exec onnx-serving serve --port=8500 --rest_api_port=8501 --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"' \
    > /usr/bin/tf_serving_entrypoint.sh \
 && chmod +x /usr/bin/tf_serving_entrypoint.sh

ENV MODEL_NAME=model MODEL_BASE_PATH=/models
RUN mkdir -p "${MODEL_BASE_PATH}"
EXPOSE 8500 8501
ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]
