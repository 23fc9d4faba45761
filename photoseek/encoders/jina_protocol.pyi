# Types of the message classes jina_protocol.py builds at run time (the way mypy-protobuf describes
# generated classes): field names and types as declared in its tables.
from collections.abc import MutableMapping
from typing import Any

import numpy as np
from google.protobuf import empty_pb2
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer, RepeatedScalarFieldContainer
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct

CALL: str
PROCESS_SINGLE_DATA: str
DRY_RUN: str
INFO: str
ENDPOINT_DISCOVERY: str
SUCCESS: int
ERROR: int
CHANNEL_OPTIONS: list[tuple[str, int]]
_POOL: DescriptorPool

class DenseNdArray(Message):
    buffer: bytes
    shape: RepeatedScalarFieldContainer[int]
    dtype: str

class NdArray(Message):
    dense: DenseNdArray
    cls_name: str

class Document(Message):
    id: str
    blob: bytes
    tensor: NdArray
    text: str
    uri: str
    mime_type: str
    embedding: NdArray

class DocumentArray(Message):
    docs: RepeatedCompositeFieldContainer[Document]

class ExceptionInfo(Message):
    name: str
    args: RepeatedScalarFieldContainer[str]
    stacks: RepeatedScalarFieldContainer[str]
    executor: str

class Status(Message):
    def __init__(self, *, code: int = ..., description: str = ..., exception: ExceptionInfo | None = ...) -> None: ...
    code: int
    description: str
    exception: ExceptionInfo

class Header(Message):
    request_id: str
    status: Status
    exec_endpoint: str
    target_executor: str

class Route(Message):
    executor: str
    status: Status

class DataContent(Message):
    docs: DocumentArray
    docs_bytes: bytes

class DataRequest(Message):
    def __init__(self, **fields: Any) -> None: ...
    header: Header
    parameters: Struct
    routes: RepeatedCompositeFieldContainer[Route]
    data: DataContent

class Endpoints(Message):
    def __init__(self, *, endpoints: list[str] | None = ..., write_endpoints: list[str] | None = ...) -> None: ...
    endpoints: RepeatedScalarFieldContainer[str]
    write_endpoints: RepeatedScalarFieldContainer[str]

class JinaInfo(Message):
    def __init__(self, *, jina: dict[str, str] | None = ..., envs: dict[str, str] | None = ...) -> None: ...
    jina: MutableMapping[str, str]
    envs: MutableMapping[str, str]

Empty = empty_pb2.Empty

def write_array(target: NdArray, array: np.ndarray) -> None: ...
def read_array(source: NdArray) -> np.ndarray | None: ...
