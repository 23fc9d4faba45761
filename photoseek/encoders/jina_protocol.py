"""clip-as-service's gRPC wire protocol: jina's `DataRequestProto` carrying docarray `DocumentProto`s.

clip-client and clip-server speak it through jina, whose pins cannot share an environment with
FastAPI and pydantic 2; the protocol itself is a handful of protobuf messages, declared here from
jina 3.x's `jina.proto` and docarray 0.x's `docarray.proto` (same packages, names and field numbers).
Only the fields that encoding touches are declared: protobuf carries the rest as unknown fields, so
a request passing through a server built on this keeps everything its client put in it.

The descriptors are built in code into a private pool: no generated `_pb2` modules to fall out of
step with the installed protobuf, and no clash with jina's own classes in a process that has both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2, message_factory, struct_pb2

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "uint32": _F.TYPE_UINT32}

# (message, [(field, number, type, oneof or "" , repeated)]); a type starting with "." is a message or enum;
# a oneof named "_field" is proto3's `optional` (a synthetic oneof that only tracks presence)
_DOCARRAY = [
    ("DenseNdArrayProto", [("buffer", 1, "bytes", "", False), ("shape", 2, "uint32", "", True),
                           ("dtype", 3, "string", "", False)]),
    ("NdArrayProto", [("dense", 1, ".docarray.DenseNdArrayProto", "content", False), ("cls_name", 3, "string", "", False)]),
    ("DocumentProto", [("id", 1, "string", "", False), ("blob", 2, "bytes", "content", False),
                       ("tensor", 3, ".docarray.NdArrayProto", "content", False), ("text", 4, "string", "content", False),
                       ("uri", 9, "string", "", False), ("mime_type", 11, "string", "", False),
                       ("embedding", 16, ".docarray.NdArrayProto", "", False)]),
    ("DocumentArrayProto", [("docs", 1, ".docarray.DocumentProto", "", True)]),
]
_JINA = [
    ("ExceptionProto", [("name", 1, "string", "", False), ("args", 2, "string", "", True),
                        ("stacks", 3, "string", "", True), ("executor", 4, "string", "", False)]),
    ("StatusProto", [("code", 1, ".jina.StatusProto.StatusCode", "", False), ("description", 2, "string", "", False),
                     ("exception", 3, ".jina.StatusProto.ExceptionProto", "", False)]),
    ("HeaderProto", [("request_id", 1, "string", "", False), ("status", 2, ".jina.StatusProto", "", False),
                     ("exec_endpoint", 3, "string", "_exec_endpoint", False),
                     ("target_executor", 4, "string", "_target_executor", False)]),
    ("RouteProto", [("executor", 1, "string", "", False), ("status", 4, ".jina.StatusProto", "", False)]),
    ("DataContentProto", [("docs", 1, ".docarray.DocumentArrayProto", "documents", False),
                          ("docs_bytes", 2, "bytes", "documents", False)]),
    ("DataRequestProto", [("header", 1, ".jina.HeaderProto", "", False), ("parameters", 2, ".google.protobuf.Struct", "", False),
                          ("routes", 3, ".jina.RouteProto", "", True),
                          ("data", 4, ".jina.DataRequestProto.DataContentProto", "", False)]),
    ("EndpointsProto", [("endpoints", 1, "string", "", True), ("write_endpoints", 2, "string", "", True)]),
    ("JinaEntry", [("key", 1, "string", "", False), ("value", 2, "string", "", False)]),
    ("EnvsEntry", [("key", 1, "string", "", False), ("value", 2, "string", "", False)]),
    ("JinaInfoProto", [("jina", 1, ".jina.JinaInfoProto.JinaEntry", "", True), ("envs", 2, ".jina.JinaInfoProto.EnvsEntry", "", True)]),
]
# jina nests these inside other messages; the tables above keep them flat for reading
_NESTED = {"ExceptionProto": "StatusProto", "DataContentProto": "DataRequestProto",
           "JinaEntry": "JinaInfoProto", "EnvsEntry": "JinaInfoProto"}
_MAP_ENTRIES = {"JinaEntry", "EnvsEntry"}  # map<string, string> fields of JinaInfoProto

# The RPCs that clip-client, clip-server and our encoder server use, by gRPC method path
CALL = "/jina.JinaRPC/Call"  # the client streams requests, the server streams answers (jina's default)
PROCESS_SINGLE_DATA = "/jina.JinaSingleDataRequestRPC/process_single_data"  # one request, one answer
DRY_RUN = "/jina.JinaGatewayDryRunRPC/dry_run"  # Empty -> StatusProto: readiness
INFO = "/jina.JinaInfoRPC/_status"  # Empty -> JinaInfoProto: version map; ours adds the model and dimension
ENDPOINT_DISCOVERY = "/jina.JinaDiscoverEndpointsRPC/endpoint_discovery"  # Empty -> EndpointsProto

SUCCESS, ERROR = 0, 1
# Unlimited, as jina sets them: a batch of images easily passes gRPC's 4 MB default
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def _message(name: str, fields: list[tuple[str, int, str, str, bool]]) -> descriptor_pb2.DescriptorProto:
    message = descriptor_pb2.DescriptorProto(name=name)
    oneofs: list[str] = []
    for field_name, number, kind, oneof, repeated in fields:
        field = message.field.add(name=field_name, number=number,
                                  label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
        if kind.startswith("."):
            field.type = _F.TYPE_ENUM if kind.endswith("StatusCode") else _F.TYPE_MESSAGE
            field.type_name = kind
        else:
            field.type = _SCALARS[kind]
        if oneof:
            field.proto3_optional = oneof == f"_{field_name}"
            if oneof not in oneofs:
                oneofs.append(oneof)
                message.oneof_decl.add(name=oneof)
            field.oneof_index = oneofs.index(oneof)
    return message


def _file(name: str, package: str, table: list[Any], dependencies: list[str]) -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3", dependency=dependencies)
    built = {message_name: _message(message_name, fields) for message_name, fields in table}
    for entry in _MAP_ENTRIES & built.keys():
        built[entry].options.map_entry = True
    for child, parent in _NESTED.items():
        if child in built:
            built[parent].nested_type.append(built.pop(child))
    if "StatusProto" in built:
        codes = built["StatusProto"].enum_type.add(name="StatusCode")
        codes.value.add(name="SUCCESS", number=SUCCESS)
        codes.value.add(name="ERROR", number=ERROR)
    file.message_type.extend(built.values())
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
_POOL.Add(_file("docarray.proto", "docarray", _DOCARRAY, ["google/protobuf/struct.proto"]))
_POOL.Add(_file("jina.proto", "jina", _JINA, ["google/protobuf/struct.proto", "docarray.proto"]))


def _class(full_name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


DataRequest = _class("jina.DataRequestProto")
Status = _class("jina.StatusProto")
Endpoints = _class("jina.EndpointsProto")
JinaInfo = _class("jina.JinaInfoProto")
Empty = empty_pb2.Empty  # a well-known type: the same class everywhere


def write_array(target: Any, array: np.ndarray) -> None:
    """Fill an NdArrayProto the way docarray does (dense buffer, numpy dtype string)."""
    array = np.ascontiguousarray(array)
    target.dense.buffer = array.tobytes()
    del target.dense.shape[:]
    target.dense.shape.extend(array.shape)
    target.dense.dtype = array.dtype.str
    target.cls_name = "numpy"


def read_array(source: Any) -> np.ndarray | None:
    """An NdArrayProto's dense content as numpy, or None when it carries none."""
    if source.WhichOneof("content") != "dense" or not source.dense.buffer:
        return None
    return np.frombuffer(source.dense.buffer, dtype=np.dtype(source.dense.dtype)).reshape(tuple(source.dense.shape))
