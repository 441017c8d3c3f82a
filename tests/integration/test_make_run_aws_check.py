"""`RUN_AWS=real make run`'s credential check against an AWS endpoint (moto's server): credentials it accepts
are no problem; with none at all, the problem names where botocore looked."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmlmon_dev.aws_check import credentials_problem

pytestmark = pytest.mark.integration


def test_credentials_aws_accepts_are_no_problem(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert credentials_problem("us-east-1", timeout=5) is None


def test_no_credentials_name_the_sources_tried(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("BOTO_CONFIG", str(empty))
    problem = credentials_problem("us-east-1", timeout=5)
    assert problem is not None and "no AWS credentials were found" in problem
    assert f"shared credentials file {empty}" in problem and "disabled by AWS_EC2_METADATA_DISABLED" in problem
