"""The pure parts of cmlmon_core's security: the auth file, token lookup, its reload, secrets from files."""

from __future__ import annotations

import io
import os
import ssl
from pathlib import Path

import pytest
import yaml

from cmlmon_core import auth
from cmlmon_core.auth import AuthFileError, AuthPolicy, Identity, PolicyFile, Role, token_entry, write_auth_file
from cmlmon_core.settings import AwsSettings, SettingsFileError, load_settings
from notifier.settings import NotifierSettings


def policy(tmp_path: Path, *entries: dict[str, str], **certificates: Role) -> Path:
    path = tmp_path / "auth.yaml"
    write_auth_file(path, list(entries), certificates)
    return path


def test_tokens_are_stored_hashed_and_found_by_value(tmp_path: Path) -> None:
    path = policy(tmp_path, token_entry("s3cret-a", "alice", Role.ADMIN), token_entry("s3cret-b", "bob", Role.VIEWER))
    assert "s3cret" not in path.read_text()
    loaded = AuthPolicy.load(path)
    assert loaded.by_token("s3cret-a") == Identity("alice", Role.ADMIN)
    assert loaded.by_token("s3cret-b") == Identity("bob", Role.VIEWER)
    assert loaded.by_token("s3cret-c") is None
    assert loaded.by_token("") is None


def test_certificate_subjects_map_to_roles(tmp_path: Path) -> None:
    loaded = AuthPolicy.load(policy(tmp_path, collector=Role.VIEWER))
    assert loaded.by_certificate(["", "collector.internal", "collector"]) == Identity("collector", Role.VIEWER)
    assert loaded.by_certificate(["someone"]) is None


def test_roles_are_ordered() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert Role.parse("Operator") is Role.OPERATOR
    with pytest.raises(ValueError):
        Role.parse("root")


@pytest.mark.parametrize("text", [
    "tokens: [{sha256: abcd, principal: a, role: admin}]",  # not a digest
    "tokens: [{sha256: " + "ab" * 32 + ", principal: a, role: root}]",  # no such role
    "tokens: [{principal: a, role: admin}]",
    "certificates: {a: superuser}",
    "- just a list",
    "tokens: [",
])
def test_a_bad_auth_file_is_refused_naming_the_file(text: str) -> None:
    with pytest.raises(AuthFileError, match=r"auth\.yaml"):
        AuthPolicy.parse(text, "auth.yaml")


def test_policy_file_follows_changes_at_most_once_a_second(tmp_path: Path) -> None:
    path = policy(tmp_path, token_entry("one", "a", Role.VIEWER))
    now = [100.0]
    watched = PolicyFile(path, clock=lambda: now[0])
    write_auth_file(path, [token_entry("two", "b", Role.ADMIN), token_entry("three", "c", Role.ADMIN)])
    assert watched.current().by_token("one") is not None  # not looked at yet
    now[0] += 1.5
    assert watched.current().by_token("one") is None
    assert watched.current().by_token("two") == Identity("b", Role.ADMIN)
    path.write_text("tokens: [")  # broken mid-edit: the last good file stays in force
    os.utime(path, ns=(1, 1))
    now[0] += 1.5
    assert watched.current().by_token("two") == Identity("b", Role.ADMIN)


def test_hash_token_prints_an_entry_for_a_token_from_stdin(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("tok-xyz\n"))
    assert auth.main(["hash-token", "--principal", "ci", "--role", "operator"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert AuthPolicy.parse(yaml.safe_dump(printed), "out").by_token("tok-xyz") == Identity("ci", Role.OPERATOR)


def test_secret_settings_read_their_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secret").write_text("whsec_from_file\n")
    (tmp_path / "key").write_text("AKIAFILE")
    (tmp_path / "secretkey").write_text("s3cr3t")
    monkeypatch.setenv("WEBHOOK_SECRET_FILE", str(tmp_path / "secret"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY_FILE", str(tmp_path / "secretkey"))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    assert NotifierSettings().webhook_secret == "whsec_from_file"
    assert AwsSettings().aws_credentials() == {"aws_access_key_id": "AKIAFILE", "aws_secret_access_key": "s3cr3t"}
    assert "s3cr3t" not in repr(AwsSettings())


def test_a_secret_and_its_file_together_or_an_unreadable_file_stop_the_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "rk-inline-value")
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY_FILE", str(tmp_path / "rk"))
    with pytest.raises(SystemExit) as stopped:
        load_settings(NotifierSettings)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "PAGERDUTY_ROUTING_KEY_FILE" in err and "rk-inline-value" not in err
    monkeypatch.delenv("PAGERDUTY_ROUTING_KEY")
    with pytest.raises(SettingsFileError, match="PAGERDUTY_ROUTING_KEY_FILE: cannot read"):
        NotifierSettings()


def test_non_secret_settings_have_no_file_variant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "port").write_text("1234")
    monkeypatch.setenv("GRPC_PORT_FILE", str(tmp_path / "port"))
    assert NotifierSettings().grpc_port == 50052


def test_nats_refusals_are_told_apart_from_an_unreachable_server() -> None:
    from cmlmon_core.nats_conn import _refusal, without_userinfo

    assert _refusal(Exception("nats: 'Authorization Violation'")) == "nats: 'Authorization Violation'"
    assert _refusal(ssl.SSLCertVerificationError(1, "certificate verify failed")) is not None
    assert _refusal(ConnectionRefusedError(111, "Connection refused")) is None
    assert without_userinfo("nats://svc:pa55word@nats.internal:4222") == "nats://nats.internal:4222"


def test_nats_security_settings_become_connect_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cmlmon_core.nats_conn import security_options
    from cmlmon_core.settings import CommonSettings

    (tmp_path / "pw").write_text("pw-from-file\n")
    monkeypatch.setenv("NATS_PASSWORD_FILE", str(tmp_path / "pw"))
    opts = security_options(CommonSettings(nats_user="registry", nats_creds_file="/c.creds",
                                           nats_inbox_prefix="_INBOX.registry"))
    assert opts == {"user": "registry", "password": "pw-from-file", "user_credentials": "/c.creds",
                    "inbox_prefix": "_INBOX.registry"}


def test_the_mongodb_uri_is_a_secret_with_a_file_variant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from registry.settings import RegistrySettings

    (tmp_path / "uri").write_text("mongodb://app:pw-in-file@db:27017/\n")
    monkeypatch.setenv("MONGODB_URI_FILE", str(tmp_path / "uri"))
    settings = RegistrySettings(worker_store="mongodb")
    assert settings.mongodb_uri.get_secret_value() == "mongodb://app:pw-in-file@db:27017/"
