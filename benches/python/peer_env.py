"""The peers' virtualenv: target/bench-peers-venv, made from benches/requirements-peers.txt.

Standard library only: run_peers.py calls `ensure()` before it can import NumPy, then
re-executes itself with the venv's interpreter. Each requirement line is installed by its own
`pip install`, so one that fails (no wheel, a compiler error) is recorded with pip's last
lines and that library alone is reported as not installed. The outcome is kept in
`bench-install.json` inside the venv, keyed by the requirements file's hash, so a later run
does not ask pip again.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "benches" / "requirements-peers.txt"
VENV = REPO / "target" / "bench-peers-venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / "bench-install.json"


def requirement_lines() -> list[str]:
    lines = []
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def package_name(requirement: str) -> str:
    for sep in ("==", ">=", "<=", "~=", "[", " "):
        requirement = requirement.split(sep, 1)[0]
    return requirement.strip().lower()


def ensure(log=print) -> dict:
    """Makes the venv and installs every requirement not yet tried with this file. Returns
    {package: {"ok": bool, "seconds": float, "requirement": str, "error": str?}}."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if STAMP.is_file():
        stamp = json.loads(STAMP.read_text())
        if stamp.get("requirements_sha256") == digest:
            return stamp["packages"]
    t0 = time.perf_counter()
    created = not PYTHON.exists()
    if created:
        log(f"==> creating {VENV.relative_to(REPO)}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    packages = {}
    for req in requirement_lines():
        start = time.perf_counter()
        log(f"==> pip install {req}")
        proc = subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet",
                               "--disable-pip-version-check", req],
                              capture_output=True, text=True)
        entry = {"requirement": req, "ok": proc.returncode == 0,
                 "seconds": round(time.perf_counter() - start, 1)}
        if proc.returncode != 0:
            entry["error"] = (proc.stderr or proc.stdout).strip()[-1500:]
            log(f"    FAILED ({entry['seconds']} s): {entry['error'].splitlines()[-1:]}")
        packages[package_name(req)] = entry
    STAMP.write_text(json.dumps({"requirements_sha256": digest, "packages": packages,
                                 "install_seconds": round(time.perf_counter() - t0, 1),
                                 "venv_created": created},
                                indent=1))
    return packages


def install_record() -> dict:
    """How long the last install took, and whether it made the venv from nothing (`cold`, as
    far as this venv goes: pip's download and wheel caches may still have helped)."""
    if not STAMP.is_file():
        return {}
    stamp = json.loads(STAMP.read_text())
    return {"install_seconds": stamp.get("install_seconds"), "venv_created": stamp.get("venv_created")}
