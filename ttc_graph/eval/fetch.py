"""Download the data sets of :mod:`ttc_graph.eval.sources` into the cache: resumable, sha256-checked.

A file is written to ``<name>.part`` and renamed once its sha256 matches. An interrupted download leaves its
``.part``; the next pull asks for the rest with an HTTP ``Range`` request (a server that ignores it sends the whole
file again, which replaces the part). A file whose checksum does not match is deleted and refused with a
:class:`ChecksumError`; one already in place with the right checksum is not downloaded again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from ttc_graph.errors import TTCError
from ttc_graph.eval.sources import DATA_SETS, DataSet, RemoteFile, data_cache_dir, mirror_base

__all__ = ["ChecksumError", "DownloadError", "Pulled", "fetch_file", "pull", "sha256_of"]

_CHUNK = 1 << 16


class DownloadError(TTCError):
    """A data file could not be downloaded (HTTP error, connection lost)."""


class ChecksumError(DownloadError):
    """A downloaded file's sha256 is not the registry's: it was deleted, not used."""


@dataclass(frozen=True, slots=True)
class Pulled:
    """One file of a pull: where it is, and whether it was downloaded now (else it was already there)."""

    path: Path
    downloaded: bool
    resumed_from: int = 0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_file(
    url: str, dest: Path, sha256: str, *, client: httpx.Client | None = None, timeout: float = 60.0
) -> Pulled:
    """Download ``url`` to ``dest`` unless it is there with checksum ``sha256``; resume a ``.part`` left before."""
    if dest.is_file() and sha256_of(dest) == sha256:
        return Pulled(dest, downloaded=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    headers = {"Accept-Encoding": "identity"}  # byte ranges of the file itself, not of a compressed stream
    if start:
        headers["Range"] = f"bytes={start}-"
    owned = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=True)
    try:
        with http.stream("GET", url, headers=headers) as resp:
            if resp.status_code == 416 and start:  # the part is already whole (or longer than the file)
                resumed = start
            elif resp.status_code not in (200, 206):
                raise DownloadError(f"{url}: HTTP {resp.status_code}")
            else:
                resumed = start if resp.status_code == 206 else 0
                with part.open("ab" if resumed else "wb") as fh:
                    for block in resp.iter_raw():  # written as it arrives: a broken stream keeps what came
                        fh.write(block)
    except httpx.HTTPError as exc:
        raise DownloadError(f"{url}: {type(exc).__name__}: {exc} (run the pull again to resume)") from exc
    finally:
        if owned:
            http.close()
    got = sha256_of(part)
    if got != sha256:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{url}: sha256 {got} is not the expected {sha256}; the download was deleted")
    part.replace(dest)
    return Pulled(dest, downloaded=True, resumed_from=resumed)


def pull(
    name: str,
    *,
    cache: Path | None = None,
    base: str | None = None,
    client: httpx.Client | None = None,
    on_file: Callable[[RemoteFile, Pulled], None] | None = None,
) -> tuple[DataSet, list[Pulled]]:
    """Download data set ``name`` into ``cache`` (default :func:`~ttc_graph.eval.sources.data_cache_dir`) from
    ``base`` (default :func:`~ttc_graph.eval.sources.mirror_base`); ``on_file`` hears of each file as it lands."""
    if name not in DATA_SETS:
        raise DownloadError(f"data set {name!r} is not known; use one of {', '.join(DATA_SETS)}")
    data = DATA_SETS[name]
    root = cache or data_cache_dir()
    url_base = (base or mirror_base()).rstrip("/")
    pulled = []
    for remote in data.files:
        got = fetch_file(f"{url_base}/{remote.remote}", root / remote.path, remote.sha256, client=client)
        pulled.append(got)
        if on_file is not None:
            on_file(remote, got)
    return data, pulled
