"""A fake AWS endpoint for the collector benchmark only: EC2 DescribeInstanceStatus and CloudWatch
GetMetricData / GetMetricStatistics over the query protocol, every instance running, every answer after a
fixed added latency. moto is far too slow at 10,000 instances; this is not a simulator of anything else.

Run: python bench/fake_aws.py --port 4599 --latency 0.05. GET /stats returns the calls per action."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from aiohttp import web

EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
CW_NS = "http://monitoring.amazonaws.com/doc/2010-08-01/"


def value_for(key: str) -> float:
    """A stable pseudo-random percentage per (instance, metric)."""
    return round((zlib.crc32(key.encode()) % 10_000) / 100, 2)


def members(params: dict[str, str], prefix: str) -> list[dict[str, str]]:
    """Query-protocol lists: Prefix.member.N.Field=... -> [{Field: ...}, ...] (or Prefix.N=...)."""
    found: dict[int, dict[str, str]] = {}
    for key, value in params.items():
        if not key.startswith(prefix + "."):
            continue
        rest = key[len(prefix) + 1:].removeprefix("member.")
        index, _, field = rest.partition(".")
        if index.isdigit():
            found.setdefault(int(index), {})[field] = value
    return [found[i] for i in sorted(found)]


def describe_instance_status(params: dict[str, str]) -> str:
    ids = [m[""] for m in members(params, "InstanceId")]
    items = "".join(
        f"<item><instanceId>{escape(i)}</instanceId><availabilityZone>us-east-1a</availabilityZone>"
        "<instanceState><code>16</code><name>running</name></instanceState>"
        "<systemStatus><status>ok</status></systemStatus><instanceStatus><status>ok</status></instanceStatus>"
        "</item>" for i in ids)
    return (f'<DescribeInstanceStatusResponse xmlns="{EC2_NS}"><requestId>r</requestId>'
            f"<instanceStatusSet>{items}</instanceStatusSet></DescribeInstanceStatusResponse>")


def _stamp(minutes_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


_QUERY_ID = re.compile(r"MetricDataQueries\.member\.\d+\.Id=([^&]*)")


def get_metric_data(body: str) -> str:
    """Only the query ids are read (a 500-query body has ~4,500 fields; parsing them all would make this
    process, not the collector, the bottleneck of the benchmark)."""
    newest, older = _stamp(5), _stamp(10)
    results = "".join(
        f"<member><Id>{escape(qid)}</Id><Label>l</Label><StatusCode>Complete</StatusCode>"
        f"<Timestamps><member>{newest}</member><member>{older}</member></Timestamps>"
        f"<Values><member>{value_for(qid)}</member><member>1.0</member></Values></member>"
        for qid in _QUERY_ID.findall(body))
    return (f'<GetMetricDataResponse xmlns="{CW_NS}"><GetMetricDataResult><MetricDataResults>{results}'
            "</MetricDataResults><Messages/></GetMetricDataResult>"
            "<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></GetMetricDataResponse>")


def get_metric_statistics(params: dict[str, str]) -> str:
    key = params.get("MetricName", "") + "|" + ";".join(m.get("Value", "") for m in members(params, "Dimensions"))
    return (f'<GetMetricStatisticsResponse xmlns="{CW_NS}"><GetMetricStatisticsResult>'
            f"<Label>{escape(params.get('MetricName', ''))}</Label><Datapoints>"
            f"<member><Timestamp>{_stamp(5)}</Timestamp><Average>{value_for(key)}</Average><Unit>Percent</Unit>"
            "</member></Datapoints></GetMetricStatisticsResult>"
            "<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></GetMetricStatisticsResponse>")


HANDLERS = {
    "DescribeInstanceStatus": describe_instance_status,
    "GetMetricStatistics": get_metric_statistics,
}
_ACTION = re.compile(r"(?:^|&)Action=([A-Za-z]+)")


def make_app(latency: float) -> web.Application:
    calls: Counter[str] = Counter()

    async def aws(request: web.Request) -> web.Response:
        body = await request.text()
        found = _ACTION.search(body)
        action = found.group(1) if found else ""
        calls[action] += 1
        await asyncio.sleep(latency)
        if action == "GetMetricData":
            return web.Response(text=get_metric_data(body), content_type="text/xml")
        handler = HANDLERS.get(action)
        if handler is None:
            return web.Response(status=400, content_type="text/xml",
                                text=f"<Response><Errors><Error><Code>InvalidAction</Code><Message>{escape(action)}"
                                     "</Message></Error></Errors><RequestID>r</RequestID></Response>")
        return web.Response(text=handler(dict(parse_qsl(body, keep_blank_values=True))), content_type="text/xml")

    async def stats(_: web.Request) -> web.Response:
        return web.Response(text=json.dumps(dict(calls)), content_type="application/json")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/", aws)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=4599)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    web.run_app(make_app(args.latency), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
