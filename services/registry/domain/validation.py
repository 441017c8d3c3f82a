"""Request validation: each check raises InvalidArgument naming the offending field."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from cml.monitor.v1 import registry_service_pb2 as rs
from cml.monitor.v1 import worker_pb2
from registry.domain.model import RESERVED_TAG_PREFIXES, reserved_tag
from registry.errors import InvalidArgument

REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
INSTANCE_ID = re.compile(r"^i-([0-9a-f]{8}|[0-9a-f]{17})$")
AMI_ID = re.compile(r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$")
SUBNET_ID = re.compile(r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$")
SECURITY_GROUP_ID = re.compile(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$")
INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]{0,15}\.[a-z0-9-]{1,16}$")
NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
WORKER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
KEY_NAME = re.compile(r"^[\x20-\x7e]{1,255}$")
TAG_KEY = re.compile(r"^[\w .:/=+\-@]{1,128}$")
TAG_VALUE = re.compile(r"^[\w .:/=+\-@]{0,256}$")

MAX_TAGS = 40  # EC2 allows 50 per resource; the registry adds its own
MAX_SECURITY_GROUPS = 16
MAX_POLL_INTERVAL = 86_400
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
KNOWN_STATUSES = frozenset(v for v in worker_pb2.WorkerStatus.values() if v != worker_pb2.WORKER_STATUS_UNSPECIFIED)


def _match(field: str, value: str, pattern: re.Pattern[str], what: str) -> None:
    if not pattern.fullmatch(value):
        raise InvalidArgument(field, f"{what} expected, got {value[:80]!r}")


def region(value: str, field: str = "region") -> None:
    _match(field, value, REGION, "an AWS region such as 'us-east-1'")


def instance_id(value: str, field: str = "instance_id") -> None:
    _match(field, value, INSTANCE_ID, "'i-' followed by 8 or 17 hex digits")


def worker_id(value: str, field: str = "id") -> None:
    _match(field, value, WORKER_ID, "a worker id (lower-case letters, digits, dashes)")


def name(value: str, field: str = "name") -> None:
    _match(field, value, NAME, "1-64 of letters, digits, '.', '_', '-'")


def etag(value: str, field: str = "etag") -> None:
    if value and not value.isdigit():
        raise InvalidArgument(field, "not an etag this registry issued")


def tags(values: Mapping[str, str], field: str = "tags") -> None:
    if len(values) > MAX_TAGS:
        raise InvalidArgument(field, f"at most {MAX_TAGS} tags")
    for key, value in values.items():
        _match(f"{field}[{key[:40]!r}]", key, TAG_KEY, "a tag key of 1-128 letters, digits, spaces or _.:/=+-@")
        if reserved_tag(key):
            raise InvalidArgument(f"{field}[{key[:40]!r}]", f"keys starting with {RESERVED_TAG_PREFIXES} are reserved")
        _match(f"{field}[{key[:40]!r}]", value, TAG_VALUE, "a tag value of 0-256 letters, digits, spaces or _.:/=+-@")


def poll_interval(value: int, field: str = "poll_interval_seconds") -> None:
    if value > MAX_POLL_INTERVAL:
        raise InvalidArgument(field, f"at most {MAX_POLL_INTERVAL} seconds (0 for the default)")


def statuses(values: Iterable[int], field: str = "statuses") -> None:
    for value in values:
        if value not in KNOWN_STATUSES:
            raise InvalidArgument(field, f"unknown worker status {value}")


def create(req: rs.CreateWorkerRequest) -> None:
    _match("request_id", req.request_id, REQUEST_ID, "1-128 printable ASCII characters")
    name(req.name)
    region(req.region)
    _match("instance_type", req.instance_type, INSTANCE_TYPE, "an instance type such as 'c5.metal'")
    _match("ami_id", req.ami_id, AMI_ID, "'ami-' followed by 8 or 17 hex digits")
    if req.subnet_id:
        _match("subnet_id", req.subnet_id, SUBNET_ID, "'subnet-' followed by 8 or 17 hex digits")
    if len(req.security_group_ids) > MAX_SECURITY_GROUPS:
        raise InvalidArgument("security_group_ids", f"at most {MAX_SECURITY_GROUPS}")
    for sg in req.security_group_ids:
        _match("security_group_ids", sg, SECURITY_GROUP_ID, "'sg-' followed by 8 or 17 hex digits")
    if req.key_name:
        _match("key_name", req.key_name, KEY_NAME, "1-255 printable ASCII characters")
    tags(req.tags)
    poll_interval(req.poll_interval_seconds)


def import_(req: rs.ImportWorkerRequest) -> None:
    region(req.region)
    instance_id(req.instance_id)
    if req.name:
        name(req.name)
    tags(req.tags)
    poll_interval(req.poll_interval_seconds)


def list_(req: rs.ListWorkersRequest) -> int:
    """Validate; return the effective page size."""
    if req.page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    statuses(req.statuses)
    if req.region:
        region(req.region)
    if req.name_prefix and not NAME.fullmatch(req.name_prefix):
        raise InvalidArgument("name_prefix", "1-64 of letters, digits, '.', '_', '-'")
    for key, value in req.tags.items():
        _match(f"tags[{key[:40]!r}]", key, TAG_KEY, "a tag key")
        _match(f"tags[{key[:40]!r}]", value, TAG_VALUE, "a tag value")
    return min(req.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def watch(req: rs.WatchWorkersRequest) -> None:
    if req.region:
        region(req.region)


def change(worker_id_value: str, etag_value: str) -> None:
    worker_id(worker_id_value)
    etag(etag_value)


MAX_CONTROLLER_TEXT = 2048
MIN_TIMESTAMP, MAX_TIMESTAMP = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31, as protobuf allows


def set_controller(req: rs.SetWorkerControllerRequest) -> None:
    worker_id(req.id)
    c = req.controller
    if not req.HasField("controller") or not c.HasField("probe_time"):
        raise InvalidArgument("controller.probe_time", "required")
    if not (MIN_TIMESTAMP <= c.probe_time.seconds <= MAX_TIMESTAMP and 0 <= c.probe_time.nanos < 1_000_000_000):
        raise InvalidArgument("controller.probe_time", "not a valid time")
    for field in ("url", "error", "version", "licence_registration", "licence_authorization"):
        if len(getattr(c, field)) > MAX_CONTROLLER_TEXT:
            raise InvalidArgument(f"controller.{field}", f"at most {MAX_CONTROLLER_TEXT} characters")


def sanitize_name(value: str, fallback: str) -> str:
    """A valid worker name from an EC2 Name tag (which may hold anything)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-")[:64]
    return cleaned or fallback


def importable_tags(values: Mapping[str, str]) -> dict[str, str]:
    """The instance's tags a worker may carry: not AWS's, not ours, not Name, and valid."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if key == "Name" or reserved_tag(key):
            continue
        if TAG_KEY.fullmatch(key) and TAG_VALUE.fullmatch(value) and len(out) < MAX_TAGS:
            out[key] = value
    return out
