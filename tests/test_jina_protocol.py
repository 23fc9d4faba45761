"""Our declaration of clip-as-service's gRPC messages (photoseek/encoders/jina_protocol.py) against the
descriptors jina and docarray generate, field by field, read from their own venv (.venv-clip-server)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import ROOT

from photoseek.encoders import jina_protocol

SERVER_PYTHON = ROOT / ".venv-clip-server" / "bin" / "python"

DUMP = r"""
import json
from google.protobuf import descriptor_pb2

def dump(file_descriptor):
    proto = descriptor_pb2.FileDescriptorProto()
    file_descriptor.CopyToProto(proto)
    out = {}
    def walk(messages, prefix):
        for m in messages:
            name = prefix + m.name
            out[name] = {f.name: [f.number, f.type, f.label, f.type_name,
                                  m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else ""] for f in m.field}
            out[name]["<map_entry>"] = m.options.map_entry
            walk(m.nested_type, name + ".")
    walk(proto.message_type, proto.package + ".")
    return out
"""


def _ours() -> dict[str, dict[str, object]]:
    namespace: dict[str, object] = {}
    exec(DUMP, namespace)  # the same dumper on both sides
    dump = namespace["dump"]
    pool = jina_protocol._POOL
    return {**dump(pool.FindFileByName("jina.proto")), **dump(pool.FindFileByName("docarray.proto"))}  # type: ignore[operator]


def test_our_messages_match_jinas_generated_descriptors_field_by_field() -> None:
    if not SERVER_PYTHON.exists():
        pytest.skip("jina is not installed (service/install-clip-server.sh)")
    script = DUMP + "\nfrom jina.proto import jina_pb2\nfrom docarray.proto import docarray_pb2\n" \
                    "print(json.dumps({**dump(jina_pb2.DESCRIPTOR), **dump(docarray_pb2.DESCRIPTOR)}))\n"
    env = {**os.environ, "NO_VERSION_CHECK": "1", "JINA_OPTOUT_TELEMETRY": "1", "JINA_HIDE_SURVEY": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(SERVER_PYTHON), "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    ours = json.loads(json.dumps(_ours()))
    compared = 0
    for message, fields in ours.items():
        assert message in theirs, f"{message} is not one of jina's or docarray's messages"
        for field, declared in fields.items():
            assert field in theirs[message], f"{message}.{field} is not in jina's descriptor"
            assert declared == theirs[message][field], f"{message}.{field}: ours {declared}, jina's {theirs[message][field]}"
            compared += 1
    assert compared >= 40


def test_arrays_round_trip_the_way_docarray_writes_them() -> None:
    import numpy as np

    request = jina_protocol.DataRequest()
    doc = request.data.docs.docs.add(id="a", text="a cat")
    vector = np.arange(6, dtype=np.float32).reshape(2, 3)
    jina_protocol.write_array(doc.embedding, vector)
    parsed = jina_protocol.DataRequest.FromString(request.SerializeToString())
    back = jina_protocol.read_array(parsed.data.docs.docs[0].embedding)
    assert back is not None and back.dtype == np.float32 and np.array_equal(back, vector)
    assert parsed.data.docs.docs[0].embedding.dense.dtype == "<f4" and parsed.data.docs.docs[0].embedding.cls_name == "numpy"
    assert jina_protocol.read_array(jina_protocol.DataRequest().data.docs.docs.add().embedding) is None
