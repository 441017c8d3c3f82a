"""What gRPC server reflection may show: only the files of the services a server serves and their imports.
grpc_reflection answers symbol lookups from the process-wide descriptor pool by default, which also holds
messages the services keep for themselves (cml.monitor.internal.v1); a pool of the served files keeps those
out of what API users see."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor


def served_pool(service_names: Iterable[str]) -> descriptor_pool.DescriptorPool:
    """A descriptor pool holding the files that define service_names (full names) and everything they import."""
    default = descriptor_pool.Default()
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        added.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)

    for name in service_names:
        add(default.FindServiceByName(name).file)
    return pool
