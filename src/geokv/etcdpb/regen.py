"""Regenerate the protobuf and gRPC Python modules from the .proto files here.

Run ``python -m geokv.etcdpb.regen`` after editing a .proto file. The .proto files
import each other as ``geokv/etcdpb/<name>.proto`` so their descriptors get unique
names in the global pool; the generated imports are then rewritten to be
package-relative (``from . import rpc_pb2``) so the package works from any location.
"""

from __future__ import annotations

import pathlib
import re
import sys

PROTO_NAMES = ("kv", "auth", "rpc", "v3lock", "v3election")
_ABS_IMPORT = re.compile(r"^from geokv\.etcdpb import (\w+_pb2) as ", re.MULTILINE)


def regenerate() -> list[pathlib.Path]:
    """Run protoc on every .proto file; return the generated files."""
    from grpc_tools import protoc  # dev dependency, imported only here

    here = pathlib.Path(__file__).resolve().parent
    src_root = here.parent.parent
    include = pathlib.Path(protoc.__file__).resolve().parent / "_proto"
    protos = [f"geokv/etcdpb/{name}.proto" for name in PROTO_NAMES]
    args = [
        "grpc_tools.protoc",
        f"-I{src_root}",
        f"-I{include}",
        f"--python_out={src_root}",
        f"--grpc_python_out={src_root}",
        *protos,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    written: list[pathlib.Path] = []
    for name in PROTO_NAMES:
        for suffix in ("_pb2.py", "_pb2_grpc.py"):
            path = here / f"{name}{suffix}"
            text = path.read_text()
            fixed = _ABS_IMPORT.sub(r"from . import \1 as ", text)
            if fixed != text:
                path.write_text(fixed)
            written.append(path)
    return written


def main() -> None:
    for path in regenerate():
        print(path)


if __name__ == "__main__":
    main()
    sys.exit(0)
