"""Real certificates made at test time (trustme): a CA, a server certificate for loopback, client certificates,
written as PEM files the way an operator would mount them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class CertFiles:
    cert: str
    key: str


class Pki:
    """One test CA writing PEM files into a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_file = str(folder / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)

    def issue(self, name: str, *identities: str) -> CertFiles:
        """A certificate for `identities` (the first is the CN when common_name is used), as files named after
        `name`."""
        cert = self.ca.issue_cert(*(identities or (name,)))
        files = CertFiles(str(self.folder / f"{name}.pem"), str(self.folder / f"{name}.key"))
        cert.cert_chain_pems[0].write_to_path(files.cert)
        cert.private_key_pem.write_to_path(files.key)
        return files

    def server(self) -> CertFiles:
        return self.issue("server", "localhost", "127.0.0.1")
