# onnx-serving with TF Serving's Docker conventions: gRPC on 8500, REST on 8501, the model
# at ${MODEL_BASE_PATH}/${MODEL_NAME}, flags after the image name reaching the server.
# Build it with `make docker` (CPU) or `make docker-gpu`: the context is a folder the
# Makefile stages with a wheelhouse built on the host (wheels/: the dependencies;
# project/: onnx-serving's own wheel) and the files of docker/,
# so nothing is downloaded inside the build and any base image with python3 and its venv
# module serves (BASE_IMAGE: the Makefile passes it, its default made from Debian's packages).
ARG BASE_IMAGE

FROM ${BASE_IMAGE} AS install
ARG EXTRA=cpu
# Extras beside the runtime: the server decodes images and runs string ops of converted
# models with them.
ARG SERVE_EXTRAS=images,strings
LABEL onnx-serving.stage=install-${EXTRA}
# The dependencies first, in a layer of their own: rebuilding after a code change reuses it.
COPY wheels /wheels
RUN python3 -m venv /opt/onnx-serving \
 && /opt/onnx-serving/bin/pip install --no-cache-dir --no-index /wheels/*.whl
COPY project /project
RUN /opt/onnx-serving/bin/pip install --no-cache-dir --no-index --find-links=/wheels \
    "$(ls /project/onnx_serving-*.whl)[${EXTRA},${SERVE_EXTRAS}]" \
 && /opt/onnx-serving/bin/pip uninstall --yes --quiet pip setuptools

FROM ${BASE_IMAGE}
ARG EXTRA=cpu
COPY --from=install /opt/onnx-serving /opt/onnx-serving
COPY tf_serving_entrypoint.sh tensorflow_model_server /usr/bin/
COPY monitoring.config /etc/onnx-serving/monitoring.config
# A user with KServe's uid (runAsUser: 1000); the GPU image's CUDA libraries from wheels
# made known to the dynamic loader.
RUN echo 'serving:x:1000:1000:onnx-serving:/models:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'serving:x:1000:' >> /etc/group \
 && mkdir -p /models && chown 1000:1000 /models \
 && if [ "${EXTRA}" = gpu ]; then \
      ls -d /opt/onnx-serving/lib/python3*/site-packages/nvidia/*/lib \
            /opt/onnx-serving/lib/python3*/site-packages/tensorrt_libs \
        2>/dev/null > /etc/ld.so.conf.d/onnx-serving-gpu.conf; ldconfig; \
    fi
ENV PATH=/opt/onnx-serving/bin:$PATH MODEL_NAME=model MODEL_BASE_PATH=/models
USER 1000:1000
EXPOSE 8500 8501
ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]
