"""`RUN_AWS=real make run` checks once, before starting anything, that AWS credentials exist and AWS accepts
them, the way the services will look for them (botocore's credential chain). Without this, every collector
would log a warning per region at every poll instead."""

from __future__ import annotations

import os

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

# What botocore's credential providers (by their METHOD name) look at, in the order they are tried.
_SOURCES = {
    "env": "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
    "assume-role": "role_arn of the profile",
    "assume-role-with-web-identity": "web identity token (AWS_WEB_IDENTITY_TOKEN_FILE)",
    "sso": "SSO of the profile (aws sso login)",
    "shared-credentials-file": "shared credentials file {credentials_file}",
    "custom-process": "credential_process of the profile",
    "config-file": "config file {config_file}",
    "ec2-credentials-file": "legacy AWS_CREDENTIAL_FILE",
    "boto-config": "boto config (BOTO_CONFIG, /etc/boto.cfg, ~/.boto)",
    "container-role": "container credentials (AWS_CONTAINER_CREDENTIALS_*)",
    "iam-role": "EC2 instance role (instance metadata{imds})",
}


def credential_sources(session: botocore.session.Session) -> list[str]:
    """The credential sources botocore tries for this session, described for a person."""
    values = {
        "credentials_file": session.get_config_variable("credentials_file"),
        "config_file": session.get_config_variable("config_file"),
        "imds": ", disabled by AWS_EC2_METADATA_DISABLED" if _metadata_disabled() else "",
    }
    resolver = session.get_component("credential_provider")
    return [_SOURCES.get(p.METHOD, p.METHOD).format(**values) for p in resolver.providers]


def _metadata_disabled() -> bool:
    # botocore reads this one straight from the environment, not through the session's configuration
    return os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true"


def credentials_problem(region: str, timeout: float = 10.0) -> str | None:
    """None when AWS accepts the credentials found (STS GetCallerIdentity, which needs no permission); else
    one message saying what is wrong, naming the sources tried when none were found. Blocking, bounded by
    timeout (connect and read) and a single attempt."""
    session = botocore.session.get_session()
    profile = session.get_config_variable("profile") or "default"
    try:
        credentials = session.get_credentials()
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names a profile no file has
        return f"AWS credentials could not be loaded (profile {profile}): {exc}"
    if credentials is None:
        return (f"RUN_AWS=real but no AWS credentials were found (profile {profile}); tried: "
                + "; ".join(credential_sources(session))
                + ". Set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.")
    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 1})
    sts = session.create_client("sts", region_name=region, config=config)
    try:
        sts.get_caller_identity()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return (f"AWS refused the credentials from {credentials.method} (profile {profile}): "
                f"{error.get('Code', 'error')}: {error.get('Message', '')}")
    except BotoCoreError as exc:
        return f"AWS could not be asked to check the credentials from {credentials.method}: {exc}"
    finally:
        sts.close()
    return None
