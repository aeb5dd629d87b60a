"""The app object: the one place where repository, runtime and API are wired together."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1.health import HealthServicer

from onnx_serving.server.api.grpc.server import build_server
from onnx_serving.server.api.grpc.server import start as start_grpc
from onnx_serving.server.api.oip.grpc_service import grpc_service
from onnx_serving.server.api.oip.inference import Inference
from onnx_serving.server.api.shadow import Shadowing
from onnx_serving.server.batching import BatchingOptions, read_batching_parameters
from onnx_serving.server.errors import ConfigError, ServingError
from onnx_serving.server.flags import ServerOptions
from onnx_serving.server.loading import ModelLoader
from onnx_serving.server.metrics import Metrics, VersionCounts, read_monitoring_config
from onnx_serving.server.repository.applier import ConfigApplier
from onnx_serving.server.repository.config_poller import ConfigFilePoller
from onnx_serving.server.repository.conversion import ConversionOptions, Conversions
from onnx_serving.server.repository.conversion import default_cache_dir as conversion_cache
from onnx_serving.server.repository.manager import LoadOptions, ModelManager
from onnx_serving.server.repository.model_config import (
    ModelConfig,
    read_config_file,
    single_model,
)
from onnx_serving.server.repository.poller import Poller
from onnx_serving.server.repository.storage import default_cache_dir, location
from onnx_serving.server.repository.transitions import Transition
from onnx_serving.server.request_log import RequestLogOptions, RequestLogs
from onnx_serving.server.runtime import config as runtime_config
from onnx_serving.server.runtime.model import LoadedModel
from onnx_serving.server.runtime.session import describe_install
from onnx_serving.server.runtime.threads import choose, share_cores, start_global_pools
from onnx_serving.server.serving.core import ServingCore
from onnx_serving.server.tls import ServerTls
from onnx_serving.server.warmup import WarmupOptions
from onnx_serving.server.workers import WORKERS_COUNT_ENV, WORKERS_DIR_ENV, Peers

if TYPE_CHECKING:
    from onnx_serving.server.api.rest.server import RestServer

log = logging.getLogger(__name__)


def model_configs(options: ServerOptions) -> list[ModelConfig]:
    if options.model_config_file:
        return read_config_file(location(options.model_config_file))
    return [single_model(options.model_name, options.model_base_path)]


class App:
    """Builds each part once, hands it on, and orders start-up and shutdown."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self._initial_configs = model_configs(options)
        runtime = runtime_config.server_default(
            options.runtime_config_file, options.intra_op_threads, options.inter_op_threads,
            options.per_process_gpu_memory_fraction,
        )
        if os.environ.get(WORKERS_DIR_ENV):  # one of --num_workers processes
            share_cores(int(os.environ.get(WORKERS_COUNT_ENV, "1")))
        if runtime.thread_pool == "global":  # before any session: sized once
            start_global_pools(choose(runtime))
        self._metrics_path = (
            read_monitoring_config(Path(options.monitoring_config_file))
            if options.monitoring_config_file else None
        )
        if self._metrics_path is not None and not options.rest_api_port:
            raise ConfigError(
                "--monitoring_config_file enables Prometheus, which is served on the REST "
                "port: set --rest_api_port too"
            )
        self.metrics = Metrics(versions=self._version_counts)
        # The manager loads through the loader, which warms up through the serving core,
        # which answers from the manager: built in that order, the loader called last.
        self.manager: ModelManager[LoadedModel] = ModelManager(
            lambda name, version_dir: self._loader.load(name, version_dir),
            LoadOptions(
                max_retries=options.max_num_load_retries,
                retry_interval=options.load_retry_interval_micros / 1e6,
                load_threads=options.num_load_threads,
                unload_threads=options.num_unload_threads,
                transition=Transition(options.version_transition_policy),
            ),
            observer=self.metrics,
            describe=ModelLoader.describe,
            close=ModelLoader.unload,
        )
        self._request_log = RequestLogs(
            RequestLogOptions(options.request_log_max_file_bytes, options.request_log_max_files,
                              options.request_log_queue_size),
            self.metrics.request_log,
        )
        # The one serving core: gRPC's services, REST and warmup all answer through it.
        self.serving = ServingCore(
            self.manager, self.metrics,
            method_check=options.enable_signature_method_name_check,
            request_log=self._request_log,
        )
        self._loader = ModelLoader(
            runtime,
            WarmupOptions(
                enabled=options.enable_model_warmup,
                iterations=options.num_request_iterations_for_warmup,
                synthetic=options.enable_synthetic_warmup,
                synthetic_dim=options.synthetic_warmup_dim,
            ),
            self.serving, self.metrics,
            batching=(
                read_batching_parameters(options.batching_parameters_file)
                if options.batching_parameters_file else BatchingOptions(
                    thread_pool_name="model_server_batch_threads"
                )
            ) if options.enable_batching else None,
            per_model_batching=options.enable_per_model_batching_parameters,
            conversions=Conversions(ConversionOptions(
                enabled=options.convert_saved_models,
                cache_dir=Path(options.saved_model_cache_dir or conversion_cache()),
                concurrent=options.num_saved_model_conversions,
                memory_mb=options.saved_model_conversion_memory_mb,
                timeout_s=options.saved_model_conversion_timeout_seconds,
            )),
        )
        self._poller = Poller(self.manager, options.file_system_poll_wait_seconds,
                              Path(options.object_store_cache_dir or default_cache_dir()))
        # The Open Inference Protocol (KServe v2) over the same core, on both ports.
        self._oip = Inference(self.serving, self.readiness)
        self.applier = ConfigApplier(
            self.manager, self._poller,
            allow_unavailable_labels=options.allow_version_labels_for_unavailable_models,
            on_applied=self._request_log.set_configs,
        )
        self._config_poller = ConfigFilePoller(
            location(options.model_config_file), options.model_config_file_poll_wait_seconds,
            self.applier.apply,
        ) if options.model_config_file else None
        self._tls = ServerTls(
            Path(options.ssl_config_file), options.ssl_config_file_poll_wait_seconds
        ) if options.ssl_config_file else None
        self._server: grpc.Server | None = None
        self._health = HealthServicer() if options.enable_grpc_healthcheck_service else None
        self._rest: RestServer | None = None
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._peers = Peers.from_environment(self.applier.apply)
        self._shadow = Shadowing(
            Path(options.shadow_config_file), options.shadow_config_file_poll_wait_seconds,
            self.metrics.registry, RequestLogOptions(options.request_log_max_file_bytes,
                                                     options.request_log_max_files),
        ) if options.shadow_config_file else None

    def _version_counts(self) -> list[VersionCounts]:
        counts = []
        in_flight = self.manager.in_flight()
        for name, models in self.manager.available().items():
            providers = Counter(p for model in models for p in model.providers)
            counts.append(VersionCounts(
                name, len(models), dict(providers),
                in_flight=in_flight.get(name, 0),
                batch_queue_depth=sum(model.batch_queue_depth for model in models),
            ))
        return counts

    def start(self) -> None:
        """Loads the initial models, then opens the ports (as TF Serving does)."""
        log.info(describe_install())
        self._loader.log_batching()
        if self._metrics_path is None:
            log.info("Monitoring is off (--monitoring_config_file)")
        else:
            log.info("Monitoring is on: Prometheus metrics at %s on the REST port %d",
                     self._metrics_path, self.options.rest_api_port)
        try:
            self.applier.apply(self._initial_configs)
        except ServingError as exc:
            # Unlike TF Serving, one bad model does not stop the others from serving.
            log.error("Not every model is available at start-up: %s", exc.message)
        self._poller.start()
        if self._config_poller is not None:
            self._config_poller.start()
        if self._peers is not None:
            self._peers.start(self._stopped)
        self.metrics.publish_live(self._stopped)
        server = build_server(
            self.serving,
            reload=self._peers.reload if self._peers is not None else self.applier.apply,
            reuse_port=self.options.reuse_port,
            metrics=self.metrics,
            max_threads=self.options.grpc_threads,
            max_streams=self.options.grpc_streams,
            channel_arguments=self.options.grpc_channel_arguments,
            tensor_content=self.options.enable_serialization_as_tensor_content,
            access_log=self.options.enable_access_log,
            health_servicer=self._health,
            services=[grpc_service(self._oip)],
            install_prediction=self._shadow.install if self._shadow is not None else None,
            inline_cpu=self.options.inline_cpu,
        )
        start_grpc(
            server, port=self.options.port, socket_path=self.options.grpc_socket_path,
            credentials=self._tls.grpc_credentials if self._tls is not None else None,
        )
        self._server = server
        if self._tls is not None:
            self._tls.start()
        if self.options.rest_api_port:
            # Imported here: a gRPC-only server never loads the HTTP stack.
            from onnx_serving.server.api.oip.rest import OipRest
            from onnx_serving.server.api.rest.protocol import HttpLimits
            from onnx_serving.server.api.rest.server import RestServer

            self._rest = RestServer(
                self.serving,
                port=self.options.rest_api_port,
                threads=self.options.rest_threads,
                timeout_ms=self.options.rest_api_timeout_in_ms,
                metrics=self.metrics,
                metrics_path=self._metrics_path,
                access_log=self.options.enable_access_log,
                reuse_port=self.options.reuse_port,
                ssl_context=self._tls.rest_context()
                if self._tls is not None and self.options.rest_api_enable_ssl else None,
                readiness=self.readiness,
                cors=self.options.rest_api_enable_cors_support,
                limits=HttpLimits.from_options(self.options),
                inline_cpu=self.options.inline_cpu,
                mounts=[OipRest(self._oip,
                                max_gzip_bytes=self.options.rest_api_max_gzip_bytes),
                        *((self._shadow.page,) if self._shadow is not None else ())],
            )
            self._rest.start()
            log.info("Exporting HTTP/REST API at:localhost:%d ...", self.options.rest_api_port)


    def readiness(self) -> str | None:
        """Why this server should not get traffic now, or None when every model can answer."""
        if self._stop_requested.is_set():
            return "shutting down"
        missing = self.manager.unavailable_models()
        return f"no version available of {', '.join(missing)}" if missing else None

    def request_stop(self) -> None:
        """Safe in a signal handler: ``wait`` returns, and the caller then calls ``stop``."""
        self._stop_requested.set()

    def wait(self) -> None:
        self._stop_requested.wait()

    def stop(self, grace: float = 5.0) -> None:
        """Health turns NOT_SERVING at once; requests are still answered for
        --shutdown_delay_seconds (while load balancers stop sending any), then the ports
        close and those in flight get at most ``grace`` seconds to finish."""
        self._stop_requested.set()
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        delay = self.options.shutdown_delay_seconds
        if delay > 0 and self._server is not None:
            log.info("Not serving; still answering for %d s (--shutdown_delay_seconds)", delay)
            time.sleep(delay)
        self._stopped.set()
        self._poller.stop()
        if self._config_poller is not None:
            self._config_poller.stop()
        if self._tls is not None:
            self._tls.stop()
        if self._rest is not None:
            self._rest.stop()
        if self._server is not None:
            self._server.stop(grace).wait()
        if self._shadow is not None:
            self._shadow.close()
        self.manager.close()
        self._loader.close()
        self._request_log.close()
