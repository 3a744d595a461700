"""Download a file atomically with a progress bar and sha256 check; where the public datasets live.

    python -m repro.data.download snli data/          # fetch and unzip a known dataset
    python -m repro.data.download --list

No sha256 below is filled in: none could be verified from here (these machines reach no dataset
host), and an invented hash is worse than none. Pass one to `download` when you have it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from repro.data.progress import start_byte_progress
from repro.errors import DataError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    url: str
    sha256: str | None  # None: not verified (see the module docstring)
    note: str = ""


SOURCES: dict[str, Source] = {
    "glove-840b": Source(
        "https://nlp.stanford.edu/data/glove.840B.300d.zip",
        None,
        "GloVe Common Crawl 840B tokens, cased, 2.2M words, 300-d (2.0 GB zip, 5.6 GB text). "
        "The BiMPM paper's vectors.",
    ),
    "glove-42b": Source(
        "https://nlp.stanford.edu/data/glove.42B.300d.zip",
        None,
        "GloVe Common Crawl 42B tokens, uncased, 1.9M words, 300-d (1.9 GB zip). "
        "The authors' released Quora wordvec.txt was cut from it.",
    ),
    "snli": Source(
        "https://nlp.stanford.edu/projects/snli/snli_1.0.zip",
        None,
        "SNLI 1.0 (Bowman et al. 2015): snli_1.0/snli_1.0_{train,dev,test}.jsonl.",
    ),
    "wikiqa": Source(
        "https://download.microsoft.com/download/E/5/F/E5FCFCEE-7005-4814-853D-DAA7C66507E0/"
        "WikiQACorpus.zip",
        None,
        "WikiQA (Yang, Yih & Meek 2015): WikiQACorpus/WikiQA-{train,dev,test}.tsv. BiMPM's "
        "answer selection (Table 4).",
    ),
}

# Google Drive serves large files behind a confirmation page, so this is not fetched by
# `download`: open the link in a browser. Source: the authors' README (github.com/zhiguowang/BiMPM,
# "Quora Question Pair dataset used in our paper"); the zip holds
# Quora_question_pair_partition/{train,dev,test}.tsv and wordvec.txt.
QUORA_PARTITION_URL = (
    "https://drive.google.com/file/d/0B0PlTAo--BnaQWlsZl9FZ3l1c28/view?usp=sharing"
)


def how_to_get(name: str, dest: str = "data/") -> str:
    """One sentence telling a user how to obtain a dataset (used in missing-file errors)."""
    if name == "quora":
        return (
            f"download the authors' Quora partition from {QUORA_PARTITION_URL} "
            "(a browser is needed: Google Drive) and unzip it"
        )
    src = SOURCES[name]
    return f"run `python -m repro.data.download {name} {dest}` (fetches {src.url} and unzips it)"


def compressed_format(head: bytes) -> str | None:
    """The archive format ("gzip" or "zip") that `head`, a file's first bytes, starts; or None.

    The readers call it on a file's first line so that a .gz or .zip handed over where text is
    expected gets "unzip it first" instead of a confusing parse error further on.
    """
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    return None


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    progress: bool = True,
    console=None,
    timeout: float = 60.0,
) -> Path:
    """Fetch `url` to `dest` (a file path). Returns dest.

    Already there with the right sha256 (or any content when sha256 is None): not fetched again.
    The bytes go to a temporary file beside dest, renamed into place only once complete and
    verified, so an interrupted or failed download never leaves a partial `dest`.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256.lower()):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        resp = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (http(s) URLs we list)
    except urllib.error.HTTPError as e:
        raise DataError(f"download failed: {url} answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"download failed: cannot reach {url} ({reason})") from None

    total = int(resp.headers.get("Content-Length") or 0) or None
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    bar = None
    try:
        if progress:
            bar, task = start_byte_progress(dest.name, total, console=console)
        with resp, os.fdopen(fd, "wb") as out:
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                h.update(chunk)
                if bar is not None:
                    bar.update(task, advance=len(chunk))
        if bar is not None:
            bar.stop()
            bar = None
        actual = h.hexdigest()
        if sha256 is not None and actual != sha256.lower():
            raise DataError(
                f"sha256 mismatch for {url}: expected {sha256.lower()}, got {actual}; "
                f"the download was removed (not written to {dest})"
            )
        os.replace(tmp, dest)
    finally:
        if bar is not None:
            bar.stop()
        tmp.unlink(missing_ok=True)
    return dest


def fetch(name: str, dest_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Download a known dataset's zip into dest_dir and unzip it there. Returns dest_dir."""
    if name not in SOURCES:
        raise DataError(
            f"unknown dataset {name!r}; known: {', '.join(SOURCES)} ({how_to_get('quora')})"
        )
    src = SOURCES[name]
    dest_dir = Path(dest_dir)
    archive = download(src.url, dest_dir / src.url.rsplit("/", 1)[1], src.sha256, progress)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest_dir)
    return dest_dir


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Download and unzip a dataset repro knows about.")
    ap.add_argument("name", nargs="?", choices=sorted(SOURCES), help="which dataset")
    ap.add_argument("dest", nargs="?", default="data", help="folder to put it in (default: data)")
    ap.add_argument("--list", action="store_true", help="list the known datasets and exit")
    args = ap.parse_args(argv)
    if args.list or args.name is None:
        for n, s in SOURCES.items():
            print(f"{n:12s} {s.url}\n{'':12s} {s.note}")
        print(f"{'quora':12s} {QUORA_PARTITION_URL}\n{'':12s} manual: {how_to_get('quora')}")
        return
    print(fetch(args.name, args.dest))


if __name__ == "__main__":
    main()
