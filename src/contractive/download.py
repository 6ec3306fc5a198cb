"""Downloading the IDX datasets into the user cache, verified and written atomically.

Each file is fetched from the dataset's mirrors in turn, streamed into a temporary file in
the destination folder (with a progress bar on a terminal), checked (the archive's published
MD5, or the MD5 of its uncompressed content, and its IDX structure) and only then renamed to
its final name. A failed or interrupted download leaves no file under a final name.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .data import IDX_DATASETS, _spec, cache_dir, check_file, md5_hex, parse_idx, read_idx_bytes
from .io import default_mode, missing_folders, remove_empty_folders

_CHUNK = 1 << 16
TIMEOUT_S = 30.0


def _fetch(url: str, dest: Path, progress: bool) -> tuple[Path, str]:
    """Stream ``url`` into a temporary file beside ``dest``; returns (temp path, its MD5)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.fchmod(fd, default_mode())
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False)
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp), digest.hexdigest()


def _verify_download(name: str, stem: str, tmp: Path, archive_md5: str) -> None:
    spec = _spec(name)
    if spec.gz_md5.get(stem) == archive_md5:
        return
    raw = read_idx_bytes(tmp)
    if spec.raw_md5.get(stem) is None or md5_hex(raw) != spec.raw_md5[stem]:
        raise ValueError(f"checksum mismatch for {stem}.gz (MD5 {archive_md5})")
    parse_idx(raw, tmp)


def download_dataset(
    name: str, dest: str | os.PathLike | None = None, *, mirrors: tuple[str, ...] | None = None,
    progress: bool | None = None, force: bool = False,
) -> Path:
    """Download the four files of ``name`` into ``dest`` (default: the user cache).

    Files already there and intact are kept (all are re-fetched with ``force``). Returns the
    folder. Raises ``ValueError`` naming the file and every mirror's error when one cannot
    be fetched (for example offline).
    """
    spec = _spec(name)
    folder = Path(dest) if dest is not None else cache_dir(name)
    created = missing_folders(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{folder}: cannot create the download folder ({exc})") from None
    try:
        _download_files(name, spec, folder, mirrors, progress, force)
    except BaseException:
        remove_empty_folders(created)  # leave no empty folders behind a failed download
        raise
    return folder


def _download_files(name: str, spec, folder: Path, mirrors, progress, force: bool) -> None:
    mirrors = tuple(mirrors or spec.mirrors)
    progress = sys.stderr.isatty() if progress is None else progress
    for stem in spec.files:
        final = folder / f"{stem}.gz"
        if not force and _intact(name, folder, stem):
            continue
        errors = []
        for base in mirrors:
            url = base + f"{stem}.gz"
            try:
                tmp, archive_md5 = _fetch(url, final, progress)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
                continue
            try:
                _verify_download(name, stem, tmp, archive_md5)
            except ValueError as exc:
                tmp.unlink(missing_ok=True)
                errors.append(f"{url}: {exc}")
                continue
            os.replace(tmp, final)
            (folder / stem).unlink(missing_ok=True)  # a damaged uncompressed copy would shadow it
            break
        else:
            raise ValueError(f"could not download {stem}.gz into {folder}: " + "; ".join(errors))


def _intact(name: str, folder: Path, stem: str) -> bool:
    """A file of ``name`` is present in ``folder`` and passes the checks on read."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            try:
                raw = read_idx_bytes(candidate)
                check_file(name, candidate, raw)
                parse_idx(raw, candidate)
            except ValueError:
                return False
            return True
    return False


def cached_status(name: str) -> tuple[Path, str]:
    """The cache folder of ``name`` and its state: ``complete`` (all four files present;
    their checksums are checked when they are read), ``partial`` or ``empty``."""
    folder = cache_dir(name)
    present = [s for s in IDX_DATASETS[name].files
               if (folder / s).is_file() or (folder / f"{s}.gz").is_file()]
    state = "complete" if len(present) == 4 else ("partial" if present else "empty")
    return folder, state
