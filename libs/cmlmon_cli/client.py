"""The two services as the command line sees them: one typed call per RPC, the caller's token on every call,
gRPC errors turned into CliError here (the edge), paging followed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cml.monitor.v1 import alert_pb2, alert_pb2_grpc, worker_pb2
from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import registry_service_pb2_grpc as rs_grpc
from cmlmon_cli.errors import CliError, from_rpc
from cmlmon_cli.settings import CliSettings

R = TypeVar("R")
LIST_PAGE_SIZE = 500
METRICS_PAGE_SIZE = 5000
HEALTH_TIMEOUT = 5.0


@dataclass
class Endpoint:
    """One service: its name for messages ("registry"), its address, and a channel opened on first use."""

    name: str
    address: str
    settings: CliSettings
    metadata: tuple[tuple[str, str], ...]
    _channel: grpc.Channel | None = field(default=None, repr=False)

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            tls = self.settings.tls_files()
            if tls is None:
                self._channel = grpc.insecure_channel(self.address)
            else:
                ca, key, cert = tls
                creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
                self._channel = grpc.secure_channel(self.address, creds)
        return self._channel

    def call(self, method: Callable[..., R], request: Any, timeout: float | None = None) -> R:
        try:
            return method(request, metadata=self.metadata, timeout=timeout or self.settings.call_timeout)
        except grpc.RpcError as exc:
            raise from_rpc(exc, self.name, self.address) from None

    def stream(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Iterator[Any]:
        """The responses of a server-streaming call; the call is cancelled when the caller stops reading."""
        call = method(request, metadata=self.metadata, timeout=timeout)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise from_rpc(exc, self.name, self.address) from None
        finally:
            call.cancel()

    def health(self) -> str:
        """SERVING, NOT_SERVING, ... of the whole server (grpc.health.v1, service ""), or the error line."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            reply = self.call(stub.Check, health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_TIMEOUT)
        except CliError as exc:
            return exc.message
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


class Registry:
    """cml.monitor.v1.WorkerRegistryService."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._stub = rs_grpc.WorkerRegistryServiceStub(endpoint.channel)

    def create(self, request: rs.CreateWorkerRequest) -> worker_pb2.Worker:
        return self.endpoint.call(self._stub.CreateWorker, request).worker

    def import_(self, request: rs.ImportWorkerRequest) -> worker_pb2.Worker:
        return self.endpoint.call(self._stub.ImportWorker, request).worker

    def get(self, worker_id: str) -> worker_pb2.Worker:
        return self.endpoint.call(self._stub.GetWorker, rs.GetWorkerRequest(id=worker_id)).worker

    def list_workers(self, request: rs.ListWorkersRequest) -> list[worker_pb2.Worker]:
        """Every matching worker: the pages are followed until the last."""
        request.page_size = request.page_size or LIST_PAGE_SIZE
        workers: list[worker_pb2.Worker] = []
        while True:
            page = self.endpoint.call(self._stub.ListWorkers, request)
            workers.extend(page.workers)
            if not page.next_page_token:
                return workers
            request.page_token = page.next_page_token

    def metrics(self, request: rs.GetWorkerMetricsRequest) -> rs.GetWorkerMetricsResponse:
        """The whole window in one response (samples, or buckets with a step): the pages are followed until
        the last."""
        request.page_size = request.page_size or METRICS_PAGE_SIZE
        merged = rs.GetWorkerMetricsResponse()
        while True:
            page = self.endpoint.call(self._stub.GetWorkerMetrics, request)
            merged.samples.extend(page.samples)
            merged.buckets.extend(page.buckets)
            if not page.next_page_token:
                return merged
            request.page_token = page.next_page_token

    def start(self, worker_id: str) -> worker_pb2.Worker:
        return self.endpoint.call(self._stub.StartWorker, rs.StartWorkerRequest(id=worker_id)).worker

    def stop(self, worker_id: str) -> worker_pb2.Worker:
        return self.endpoint.call(self._stub.StopWorker, rs.StopWorkerRequest(id=worker_id)).worker

    def reboot(self, worker_id: str) -> worker_pb2.Worker:
        return self.endpoint.call(self._stub.RebootWorker, rs.RebootWorkerRequest(id=worker_id)).worker

    def terminate(self, worker_id: str, force: bool = False) -> worker_pb2.Worker:
        return self.endpoint.call(self._stub.TerminateWorker,
                                  rs.TerminateWorkerRequest(id=worker_id, force=force)).worker

    def watch(self, request: rs.WatchWorkersRequest, timeout: float | None = None
              ) -> Iterator[rs.WatchWorkersResponse]:
        """The snapshot, then every change, until the server ends the stream, the timeout passes
        (DEADLINE_EXCEEDED) or the caller stops reading."""
        return self.endpoint.stream(self._stub.WatchWorkers, request, timeout)


class Alerts:
    """cml.monitor.v1.AlertService."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._stub = alert_pb2_grpc.AlertServiceStub(endpoint.channel)  # type: ignore[no-untyped-call]

    def list_alerts(self, request: alert_pb2.ListAlertsRequest) -> list[alert_pb2.Alert]:
        return list(self.endpoint.call(self._stub.ListAlerts, request).alerts)

    def create_silence(self, request: alert_pb2.CreateSilenceRequest) -> alert_pb2.Silence:
        return self.endpoint.call(self._stub.CreateSilence, request).silence

    def list_silences(self) -> list[alert_pb2.Silence]:
        return list(self.endpoint.call(self._stub.ListSilences, alert_pb2.ListSilencesRequest()).silences)

    def delete_silence(self, silence_id: str) -> None:
        self.endpoint.call(self._stub.DeleteSilence, alert_pb2.DeleteSilenceRequest(id=silence_id))


class Clients:
    """Both services for one command; channels open on first use and close when the command ends."""

    def __init__(self, settings: CliSettings) -> None:
        token = settings.bearer_token()
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.settings = settings
        self.registry_endpoint = Endpoint("registry", settings.registry, settings, metadata)
        self.notifier_endpoint = Endpoint("notifier", settings.notifier, settings, metadata)

    @property
    def registry(self) -> Registry:
        return Registry(self.registry_endpoint)

    @property
    def alerts(self) -> Alerts:
        return Alerts(self.notifier_endpoint)

    def close(self) -> None:
        self.registry_endpoint.close()
        self.notifier_endpoint.close()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
