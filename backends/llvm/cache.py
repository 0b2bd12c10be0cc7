"""The on-disk kernel cache: machine code by kernel key, shared by every process of a machine.

A key names everything the code depends on: the kernel's identity (its workload, template
family and the ember build that lowered it; the compiler supplies it), the target string, the
host CPU and its features, and the LLVM version. An entry is `<key>.o` (the object code) and
`<key>.json` (the kernel's signature and the object's SHA-256); the JSON is written last and
atomically, so a reader sees a whole entry or none, and an entry whose object does not match
its hash is ignored and rewritten.

The cache lives in $EMBER_CACHE_DIR, else $XDG_CACHE_HOME/ember, else ~/.cache/ember;
EMBER_CACHE_DIR=off disables it. Nothing else in ember reads the environment for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from ember.backends.llvm.runtime import KernelSignature

CACHE_FORMAT = 1


def default_cache_dir() -> Path | None:
    configured = os.environ.get("EMBER_CACHE_DIR")
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ember"


class DiskKernelCache:
    def __init__(self, directory: Path | None):
        self.directory = directory / f"kernels-v{CACHE_FORMAT}" if directory else None
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> tuple[bytes, KernelSignature] | None:
        if self.directory is None:
            return None
        try:
            meta = json.loads((self.directory / f"{key}.json").read_text())
            data = (self.directory / f"{key}.o").read_bytes()
            if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise ValueError("object hash mismatch")
            signature = KernelSignature.from_json(meta["signature"])
        except (OSError, ValueError, KeyError, TypeError):
            self.misses += 1
            return None
        self.hits += 1
        return data, signature

    def put(self, key: str, data: bytes, signature: KernelSignature) -> None:
        if self.directory is None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._write(self.directory / f"{key}.o", data)
            meta = {"signature": signature.to_json(), "sha256": hashlib.sha256(data).hexdigest()}
            self._write(self.directory / f"{key}.json", json.dumps(meta).encode())
        except OSError:
            pass  # a read-only or full disk costs recompilation, never a failure

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
