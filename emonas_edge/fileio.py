"""Reading untrusted files and writing artifacts atomically.

Genotypes and checkpoints come from other people: JSON is size- and depth-limited before it
is parsed, and every file we produce is written under a hidden temporary name in the target
folder and renamed into place, so an interrupted run never leaves a half-written artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

MAX_JSON_BYTES = 1 << 20  # a genotype is a few KB; anything near a megabyte is not one
MAX_JSON_DEPTH = 32
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_safe_name(name: str, what: str = "name") -> str:
    """Names become file names: allow only a plain file stem, never a path."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        raise UserError(
            f"{what} {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-' "
            "(it becomes a file name, so no '/' or '..')"
        )
    return name


def existing_file(path: str | os.PathLike, what: str = "file") -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    if not p.is_file():
        raise UserError(f"{what} is not a regular file: {p}")
    return p


def _json_depth_ok(text: str, limit: int) -> bool:
    depth = 0
    in_str = False
    escape = False
    for ch in text:
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def read_text_limited(path: str | os.PathLike, what: str = "file", limit: int = MAX_JSON_BYTES) -> str:
    p = existing_file(path, what)
    size = p.stat().st_size
    if size > limit:
        raise UserError(f"{what} {p} is {size:,} bytes; refusing anything over {limit:,} bytes")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {p} is not UTF-8 text") from None


def loads_json_limited(text: str, source: str = "JSON") -> object:
    if len(text) > MAX_JSON_BYTES:
        raise UserError(f"{source} is {len(text):,} characters; refusing anything over {MAX_JSON_BYTES:,}")
    if not _json_depth_ok(text, MAX_JSON_DEPTH):
        raise UserError(f"{source} is nested deeper than {MAX_JSON_DEPTH} levels; refusing to parse it")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{source} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> object:
    return loads_json_limited(read_text_limited(path, what), f"{what} {path}")


def recorded_path(path: str | os.PathLike) -> str:
    """A path as a manifest records it: as given when relative, relative to the working folder when under it,
    else the file's name alone. Never an absolute local path: manifests travel with the model, and
    /home/alice/... says nothing on another machine (and tells it who built it); the sha256 beside it says
    which file it was."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return p.name


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # hard links, symlinks, ./x vs x
    return a.resolve() == b.resolve()


def check_writable_location(folder: str | os.PathLike, flag: str = "output") -> None:
    """Before any work: the folder an output goes to can be made and written (a file in the way, a
    read-only place). The write itself can still fail (a full disk): ``atomic_outputs`` reports that."""
    p = Path(folder)
    while not p.exists() and p != p.parent:  # the nearest part of the path that exists decides
        p = p.parent
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag}: {p} is a file, not a folder: the output cannot go under it")
    if p.exists() and not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"{flag}: cannot write in {p} (read-only or permission denied)")


def check_output_paths(inputs: dict[str, object], outputs: dict[str, object]) -> None:
    """Refuse, before any work, an output that is one of the inputs, the same file as another output, or
    a folder where a file goes. ``{flag: path}``; None entries and non-paths (camera indices, URLs) are
    ignored. The outputs are written atomically, so without this the input would be replaced at the end."""

    def paths(d: dict[str, object]) -> list[tuple[str, Path]]:
        return [
            (k, Path(str(v))) for k, v in d.items() if v is not None and not str(v).isdigit() and "://" not in str(v)
        ]

    ins, outs = paths(inputs), paths(outputs)
    for i, (flag, out) in enumerate(outs):
        if out.is_dir():
            raise UserError(f"{flag} {out} is a folder; give a file path")
        check_writable_location(out.parent, flag)
        for in_flag, src in ins:
            if _same(out, src):
                raise UserError(f"{flag} {out} is the input {in_flag}: it would be overwritten")
        for other_flag, other in outs[:i]:
            if _same(out, other):
                raise UserError(f"{other_flag} and {flag} are the same file ({out}): give each output its own path")


class Terminated(BaseException):
    """SIGTERM, raised where it lands, as Ctrl-C raises KeyboardInterrupt: every ``finally`` runs, and like
    KeyboardInterrupt it is no ``Exception``, so no broad ``except Exception`` swallows it. Its own class
    (not a KeyboardInterrupt) because typer turns those into a silent exit 130 before the CLI can say why."""


def _raise_terminated(signum, frame):  # noqa: ARG001
    raise Terminated


def terminate_as_interrupt() -> None:
    """For the whole process (the console script): SIGTERM (``docker stop``, systemd, ``timeout``) unwinds
    like Ctrl-C, so outputs are finalised and temporary files removed. Main thread only."""
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, CI timeouts) unwinds like Ctrl-C so temporary files get removed."""

    try:
        old = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not in the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def atomic_outputs(*targets: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield hidden temporary paths beside ``targets``; rename them into place only on success.

    All targets are renamed together at the end, so a consumer never sees the model without
    its manifest. On any exception (or SIGTERM) the temporary files are removed.
    """
    finals = [Path(t) for t in targets]
    temps: list[Path] = []
    with _terminate_as_interrupt():  # installed before the first temp file exists
        try:
            for final in finals:
                with os_faults(final):
                    final.parent.mkdir(parents=True, exist_ok=True)
                    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
                os.close(fd)
                temps.append(Path(tmp_name))
            try:
                yield temps
            except OSError as e:  # writing failed (a full disk): one line naming the output; temporaries go below
                named = [f for t, f in zip(temps, finals, strict=True) if str(e.filename) == str(t)]
                if e.filename is not None and not named:
                    raise  # another file's fault (an input): not ours to rename
                raise write_fault(named[0] if named else Path(", ".join(map(str, finals))), e) from None
            for tmp, final in zip(temps, finals, strict=True):
                with os_faults(final):
                    publish(tmp, final)
        finally:
            for tmp in temps:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()


def write_fault(path: str | os.PathLike, e: OSError, error: type[UserError] = UserError) -> UserError:
    """The one message for an OS refusal while writing ``path`` (read-only, full, a file in the way)."""
    return error(f"{path}: cannot write ({e.strerror or e})")


@contextlib.contextmanager
def os_faults(path: str | os.PathLike, error: type[UserError] = UserError) -> Iterator[None]:
    """An OS refusal while writing ``path``: one line naming it (``error``, a :class:`UserError`)."""
    try:
        yield
    except OSError as e:
        raise write_fault(path, e, error) from None


def publish(tmp: Path, final: Path) -> None:
    """Give a finished temporary file the usual permissions (mkstemp makes 0600) and rename it into place."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, final)


def publish_folder(tmp: Path, final: Path) -> None:
    """A finished temporary folder takes its place (an empty ``final`` folder is replaced), with the usual
    permissions (mkdtemp makes 0700)."""
    os.chmod(tmp, 0o777 & ~_umask())
    if final.is_dir():
        final.rmdir()  # only an empty one: anything in it stays, and this raises
    os.rename(tmp, final)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``target``; it becomes ``target`` only on success.

    An existing ``target`` is an error unless ``replace``; then it is removed only after the new
    folder is complete. On any exception, Ctrl-C or SIGTERM the temporary folder goes.
    """
    import shutil

    final = Path(target)
    if final.exists() and not replace:
        raise UserError(f"{final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    with _terminate_as_interrupt():
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
        old = None
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            if final.exists():
                old = final.parent / f".{final.name}.{os.getpid()}.old"
                os.rename(final, old)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)


def cache_dir() -> Path:
    """Where derived data is cached ($EMONAS_EDGE_CACHE, default ~/.cache/emonas-edge)."""
    return Path(os.environ.get("EMONAS_EDGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "emonas-edge"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike, obj: object) -> Path:
    with atomic_outputs(path) as (tmp,):
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    return Path(path)


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """``dst`` holds all of ``src`` or is left as it was (a reader in another process never sees half a file)."""
    with atomic_outputs(dst) as (tmp,):
        shutil.copyfile(src, tmp)
    return Path(dst)
