from __future__ import annotations

import pytest

from cml.monitor.v1 import events_pb2
from cmlmon_core import messages, subjects
from cmlmon_core.logs import redact_url
from cmlmon_core.settings import AwsSettings, CommonSettings


def test_subject_helpers_build_contract_subjects() -> None:
    assert subjects.metric("eu-west-1", "w-1") == "cml.metrics.eu-west-1.w-1"
    assert subjects.poll_tick("us-east-1", "w-1") == "cml.polls.tick.us-east-1.w-1"
    assert subjects.worker_event("w-1", "created") == "cml.workers.w-1.created"
    assert subjects.alert("w-1", "cpu_high") == "cml.alerts.w-1.cpu_high"


@pytest.mark.parametrize("bad", ["", "a.b", "*", ">", "a b"])
def test_subject_tokens_refuse_wildcards_and_dots(bad: str) -> None:
    with pytest.raises(ValueError):
        subjects.metric("us-east-1", bad)


def test_encode_decode_round_trip_with_content_type() -> None:
    sample = events_pb2.MetricSample(worker_id="w-1", cpu_utilization=12.5)
    data, headers = messages.encode(sample, msg_id="m-1")
    assert headers[messages.CONTENT_TYPE] == "application/protobuf; proto=cml.monitor.v1.MetricSample"
    assert headers[messages.MSG_ID] == "m-1"
    back = messages.decode(events_pb2.MetricSample, data, headers)
    assert back.worker_id == "w-1" and back.HasField("cpu_utilization")
    assert not back.HasField("memory_utilization")


def test_decode_refuses_wrong_type_and_garbage() -> None:
    data, headers = messages.encode(events_pb2.PollTick(worker_id="w"))
    with pytest.raises(messages.UndecodableMessage):
        messages.decode(events_pb2.MetricSample, data, headers)
    with pytest.raises(messages.UndecodableMessage):
        messages.decode(events_pb2.MetricSample, b"\xff\xff\xff", None)


def test_legacy_settings_names_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_METRICS_POLL_INTERVAL", "42")
    monkeypatch.setenv("WORKER_MONITORING_ENABLED", "false")
    s = CommonSettings()
    assert s.worker_metrics_poll_interval == 42
    assert s.worker_monitoring_enabled is False


def test_redact_url_hides_tokens() -> None:
    assert redact_url("https://hooks.slack.com/services/T000/B000/secret") == "https://hooks.slack.com/…"
    assert "secret" not in redact_url("https://user:secret@example.com:8443/x?token=secret")


def test_bad_setting_fails_naming_the_variable_without_echoing_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from cmlmon_core.settings import load_settings

    monkeypatch.setenv("WORKER_METRICS_POLL_INTERVAL", "secret-not-a-number")
    with pytest.raises(SystemExit) as exc:
        load_settings(CommonSettings)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "WORKER_METRICS_POLL_INTERVAL" in err
    assert "secret-not-a-number" not in err


async def test_run_until_stopped_abandons_a_start_that_never_got_ready() -> None:
    import asyncio

    from cmlmon_core.lifecycle import run_until_stopped

    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def never_ready(ready: asyncio.Event) -> None:
        try:
            await asyncio.sleep(3600)  # a connect that retries forever
        finally:
            cancelled.set()

    asyncio.get_running_loop().call_later(0.05, stop.set)
    await asyncio.wait_for(run_until_stopped(never_ready, stop, stop_timeout=60), 5)
    assert cancelled.is_set()


async def test_run_until_stopped_lets_a_ready_service_finish_then_bounds_it() -> None:
    import asyncio

    from cmlmon_core.lifecycle import run_until_stopped

    finished: list[str] = []

    async def tidy(ready: asyncio.Event) -> None:
        ready.set()
        await stop.wait()
        await asyncio.sleep(0.05)  # hands back in-flight work
        finished.append("tidy")

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    await run_until_stopped(tidy, stop, stop_timeout=5)
    assert finished == ["tidy"]

    async def stuck(ready: asyncio.Event) -> None:
        ready.set()
        await asyncio.sleep(3600)

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    await asyncio.wait_for(run_until_stopped(stuck, stop, stop_timeout=0.1), 5)

    async def broken(ready: asyncio.Event) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await run_until_stopped(broken, asyncio.Event(), stop_timeout=1)


@pytest.mark.parametrize("value", ["0", "6", "three"])
def test_stream_replicas_outside_one_to_five_fail_naming_the_variable(
        value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from cmlmon_core.settings import load_settings

    monkeypatch.setenv("NATS_STREAM_REPLICAS", value)
    with pytest.raises(SystemExit):
        load_settings(CommonSettings)
    assert "NATS_STREAM_REPLICAS" in capsys.readouterr().err


def test_topology_options_take_the_replicas_and_history_every_service_shares(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cmlmon_core.topology import TopologyOptions

    monkeypatch.delenv("NATS_STREAM_REPLICAS", raising=False)
    assert TopologyOptions.from_settings(CommonSettings()).replicas == 1  # a single development node
    monkeypatch.setenv("NATS_STREAM_REPLICAS", "3")
    monkeypatch.setenv("METRICS_STREAM_MAX_AGE_SECONDS", "3600")
    opts = TopologyOptions.from_settings(CommonSettings())
    assert (opts.replicas, opts.metrics_max_age_seconds) == (3, 3600)


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_aws_endpoint_means_real_aws(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    # docker-compose.yml passes AWS_ENDPOINT_URL through as "" when the operator leaves it unset.
    monkeypatch.setenv("AWS_ENDPOINT_URL", value)
    assert AwsSettings().aws_endpoint_url is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws-sim:5000")
    assert AwsSettings().aws_endpoint_url == "http://aws-sim:5000"
