"""Downloading datasets (``contractive.download``) from a local HTTP server on 127.0.0.1:
mirrors tried in turn, checksums verified, atomic writes, intact files kept; offline
behaviour, corrupted and re-compressed files in the cache, ``contractive datasets``.

Nothing here reaches beyond the loopback interface: the served files are tiny fake IDX
files, and the dataset specs' checksums and mirrors are monkeypatched to match them."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from contractive import data, download
from contractive.cli import main
from contractive.data import MNIST_FILES, load_idx_dataset, load_mnist
from contractive.download import cached_status, download_dataset

DEAD = "http://127.0.0.1:1/"  # nothing listens on port 1: connection refused at once
REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = (REPO.parent / "shared" / "data" / "mnist").resolve()


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def _idx(a: np.ndarray) -> bytes:
    a = np.asarray(a, dtype=np.uint8)
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def fake_files(n_train: int = 6, n_test: int = 4, side: int = 3) -> dict[str, bytes]:
    """Raw (uncompressed) IDX content of the four files, keyed by stem."""
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        out[MNIST_FILES[f"{split}_images"]] = _idx(rng.integers(0, 256, (n, side, side)))
        out[MNIST_FILES[f"{split}_labels"]] = _idx(rng.integers(0, 10, n))
    return out


RAW = fake_files()
GZ = {stem: gzip.compress(blob, mtime=0) for stem, blob in RAW.items()}


class Server:
    """A loopback HTTP server of ``/<stem>.gz`` files that counts requests."""

    def __init__(self) -> None:
        self.files = {f"/{stem}.gz": blob for stem, blob in GZ.items()}
        self.requests: Counter[str] = Counter()
        self.truncate = False  # advertise the full length, send half
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.requests[self.path] += 1
                blob = outer.files.get(self.path)
                if blob is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                self.wfile.write(blob[: len(blob) // 2] if outer.truncate else blob)

            def log_message(self, *args):  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def fake_spec(monkeypatch):
    """Both IDX datasets' checksums replaced by those of the fake files (mirrors dead)."""
    for name in ("mnist", "fashion-mnist"):
        spec = data.IDX_DATASETS[name]
        raw_md5 = {stem: _md5(RAW[stem]) for stem in spec.files} if spec.raw_md5 else {}
        monkeypatch.setitem(data.IDX_DATASETS, name, dataclasses.replace(
            spec, gz_md5={stem: _md5(GZ[stem]) for stem in spec.files}, raw_md5=raw_md5,
            mirrors=(DEAD,)))
    return data.IDX_DATASETS


def _set_mirrors(monkeypatch, name: str, *mirrors: str) -> None:
    monkeypatch.setitem(data.IDX_DATASETS, name,
                        dataclasses.replace(data.IDX_DATASETS[name], mirrors=tuple(mirrors)))


@pytest.fixture
def cache(monkeypatch, tmp_path_factory) -> Path:
    """An empty user cache ($XDG_CACHE_HOME), no $CONTRACTIVE_DATA_DIR, an empty $HOME."""
    root = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(root))
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.delenv("CONTRACTIVE_DATA_DIR", raising=False)
    return root / "contractive"


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("CONTRACTIVE_OFFLINE", raising=False)


def _no_part_files(folder: Path) -> None:
    if folder.exists():
        left = [n for n in os.listdir(folder) if n.endswith((".part", ".tmp")) or n[0] == "."]
        assert left == [], left


# -- download_dataset ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_download_falls_back_to_the_next_mirror(tmp_path, server, fake_spec, name,
                                                monkeypatch):
    if name == "fashion-mnist":  # the fake files are MNIST's here: they would be refused
        monkeypatch.setitem(fake_spec, "mnist", dataclasses.replace(fake_spec["mnist"],
                                                                    raw_md5={}))
    dest = tmp_path / "dest"
    folder = download_dataset(name, dest, mirrors=(DEAD, server.url), progress=False)
    assert folder == dest
    assert sorted(os.listdir(dest)) == sorted(f"{s}.gz" for s in RAW)
    for stem in RAW:
        assert (dest / f"{stem}.gz").read_bytes() == GZ[stem]
    assert server.total == 4 and set(server.requests.values()) == {1}
    _no_part_files(dest)
    ds = load_idx_dataset(name, dest, download=False)
    assert ds.X_train.shape == (6, 9) and ds.X_test.shape == (4, 9)


def test_intact_files_are_kept_force_refetches(tmp_path, server, fake_spec):
    dest = tmp_path / "dest"
    download_dataset("mnist", dest, mirrors=(server.url,), progress=False)
    assert server.total == 4
    download_dataset("mnist", dest, mirrors=(server.url,), progress=False)
    assert server.total == 4  # nothing fetched again
    download_dataset("mnist", dest, mirrors=(server.url,), progress=False, force=True)
    assert server.total == 8 and set(server.requests.values()) == {2}
    _no_part_files(dest)


def test_only_missing_or_damaged_files_are_fetched(tmp_path, server, fake_spec):
    dest = tmp_path / "dest"
    dest.mkdir()
    stems = list(RAW)
    (dest / stems[0]).write_bytes(RAW[stems[0]])  # intact, uncompressed: kept
    (dest / f"{stems[1]}.gz").write_bytes(GZ[stems[1]])  # intact: kept
    damaged = bytearray(RAW[stems[2]])
    damaged[-1] ^= 0xFF
    (dest / stems[2]).write_bytes(bytes(damaged))  # wrong content: replaced
    download_dataset("mnist", dest, mirrors=(server.url,), progress=False)
    assert set(server.requests) == {f"/{stems[2]}.gz", f"/{stems[3]}.gz"}
    assert not (dest / stems[2]).exists()  # the damaged copy would shadow the good one
    assert (dest / f"{stems[2]}.gz").read_bytes() == GZ[stems[2]]
    load_mnist(dest, download=False)
    _no_part_files(dest)


def test_wrong_bytes_are_rejected(tmp_path, server, fake_spec):
    stem = MNIST_FILES["test_images"]
    other = bytearray(RAW[stem])
    other[-1] ^= 0x01  # a valid IDX file, but not the published one
    server.files[f"/{stem}.gz"] = gzip.compress(bytes(other), mtime=0)
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=re.escape(stem) + ".*checksum") as info:
        download_dataset("mnist", dest, mirrors=(server.url,), progress=False)
    assert server.url in str(info.value) and "\n" not in str(info.value)
    assert not (dest / f"{stem}.gz").exists() and not (dest / stem).exists()
    _no_part_files(dest)


def test_truncated_transfer_is_rejected(tmp_path, server, fake_spec):
    server.truncate = True
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="could not download") as info:
        download_dataset("mnist", dest, mirrors=(server.url,), progress=False)
    assert MNIST_FILES["train_images"] in str(info.value)
    assert not dest.exists()  # the folder it made for the download is removed again


def test_not_found_on_a_mirror(tmp_path, server, fake_spec):
    del server.files[f"/{MNIST_FILES['test_labels']}.gz"]
    with pytest.raises(ValueError, match=re.escape(MNIST_FILES["test_labels"]) + ".*Not Found"):
        download_dataset("mnist", tmp_path / "d", mirrors=(server.url,), progress=False)
    _no_part_files(tmp_path / "d")
    # the three good files were kept: a retry fetches only the missing one
    assert len(os.listdir(tmp_path / "d")) == 3


def test_unreachable_mirror_only(tmp_path, fake_spec):
    dest = tmp_path / "dest"
    with pytest.raises(ValueError) as info:
        download_dataset("mnist", dest, mirrors=(DEAD,), progress=False)
    msg = str(info.value)
    assert DEAD + f"{MNIST_FILES['train_images']}.gz" in msg and str(dest) in msg
    assert "\n" not in msg
    assert not dest.exists()


def test_every_mirror_error_is_listed(tmp_path, fake_spec):
    other = "http://127.0.0.1:9/"
    with pytest.raises(ValueError) as info:
        download_dataset("mnist", tmp_path / "d", mirrors=(DEAD, other), progress=False)
    assert DEAD in str(info.value) and other in str(info.value)


def test_download_with_progress_bar(tmp_path, server, fake_spec, capsys):
    download_dataset("mnist", tmp_path / "d", mirrors=(server.url,), progress=True)
    assert MNIST_FILES["train_images"] in capsys.readouterr().err
    _no_part_files(tmp_path / "d")


def test_download_into_default_cache(server, fake_spec, cache):
    folder = download_dataset("mnist", mirrors=(server.url,), progress=False)
    assert folder == cache / "mnist"
    assert cached_status("mnist") == (cache / "mnist", "complete")


def test_download_unknown_dataset():
    with pytest.raises(ValueError, match="'bogus'.*mnist"):
        download_dataset("bogus")


def test_download_folder_cannot_be_created(tmp_path, fake_spec):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=re.escape(str(blocker / "sub"))):
        download_dataset("mnist", blocker / "sub", mirrors=(DEAD,))


# -- cached_status ------------------------------------------------------------------------


def test_cached_status_states(cache):
    folder = cache / "mnist"
    assert cached_status("mnist") == (folder, "empty")
    folder.mkdir(parents=True)
    assert cached_status("mnist") == (folder, "empty")
    stems = list(RAW)
    (folder / stems[0]).write_bytes(RAW[stems[0]])
    assert cached_status("mnist") == (folder, "partial")
    for stem in stems[1:]:
        (folder / f"{stem}.gz").write_bytes(GZ[stem])
    assert cached_status("mnist") == (folder, "complete")
    assert cached_status("fashion-mnist") == (cache / "fashion-mnist", "empty")


# -- load_idx_dataset: offline, failed downloads, the cache -------------------------------


def test_offline_empty_cache_names_files_and_folders(cache, tmp_path, monkeypatch):
    assert os.environ.get("CONTRACTIVE_OFFLINE")  # set for every test by conftest
    _set_mirrors(monkeypatch, "mnist", DEAD)  # in case it were tried anyway: still local
    given = tmp_path / "given"
    with pytest.raises(ValueError) as info:
        load_idx_dataset("mnist", given)
    msg = str(info.value)
    assert "\n" not in msg and "download failed" not in msg
    for stem in MNIST_FILES.values():
        assert stem in msg
    for folder in (given, given / "mnist", cache / "mnist"):
        assert str(folder) in msg
    assert not (cache / "mnist").exists()  # nothing created


def test_online_with_dead_mirrors_says_download_failed(cache, online, monkeypatch):
    _set_mirrors(monkeypatch, "mnist", DEAD)
    with pytest.raises(ValueError, match="download failed") as info:
        load_mnist()
    msg = str(info.value)
    assert "\n" not in msg and DEAD in msg and str(cache / "mnist") in msg
    _no_part_files(cache / "mnist")


def test_online_empty_cache_downloads_then_loads(cache, online, server, fake_spec,
                                                 monkeypatch):
    _set_mirrors(monkeypatch, "mnist", DEAD, server.url)
    ds = load_mnist()
    assert ds.X_train.shape == (6, 9)
    assert sorted(os.listdir(cache / "mnist")) == sorted(f"{s}.gz" for s in RAW)
    assert server.total == 4
    load_mnist()  # now from the cache
    assert server.total == 4


def test_download_false_never_downloads(cache, online, server, fake_spec, monkeypatch):
    _set_mirrors(monkeypatch, "mnist", server.url)
    with pytest.raises(ValueError, match="not found"):
        load_mnist(download=False)
    assert server.total == 0


def test_corrupted_file_in_cache_is_named(cache, fake_spec):
    folder = cache / "mnist"
    folder.mkdir(parents=True)
    for stem, blob in GZ.items():
        (folder / f"{stem}.gz").write_bytes(blob)
    assert load_mnist().X_train.shape == (6, 9)
    bad = folder / f"{MNIST_FILES['train_labels']}.gz"
    content = bytearray(RAW[MNIST_FILES["train_labels"]])
    content[-2] ^= 0x03  # same size and header: only the checksum can tell
    bad.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*checksum mismatch") as info:
        load_mnist()
    assert "\n" not in str(info.value)


def test_recompressed_file_in_cache_is_accepted(cache, fake_spec):
    folder = cache / "mnist"
    folder.mkdir(parents=True)
    for stem, blob in RAW.items():
        (folder / f"{stem}.gz").write_bytes(gzip.compress(blob, compresslevel=1, mtime=999))
        assert (folder / f"{stem}.gz").read_bytes() != GZ[stem]
    ds = load_mnist()
    np.testing.assert_array_equal(ds.X_test * 255, np.frombuffer(
        RAW[MNIST_FILES["test_images"]][16:], np.uint8).reshape(4, 9))


def test_real_mnist_recompressed_and_corrupted_in_cache(cache):
    """With the published checksums: a re-compressed copy of the real files is accepted;
    one flipped label (re-compressed, so the gzip layer is valid) is not."""
    if not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST not available: {MNIST_DIR} does not exist")
    folder = cache / "mnist"
    folder.mkdir(parents=True)
    for stem in MNIST_FILES.values():
        src = MNIST_DIR / f"{stem}.gz"
        if not src.is_file():
            pytest.skip(f"MNIST not available: {src} does not exist")
        if "t10k" in stem:  # the small ones: re-compress differently
            raw = gzip.decompress(src.read_bytes())
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw, compresslevel=1, mtime=7))
            assert (folder / f"{stem}.gz").read_bytes() != src.read_bytes()
        else:
            os.symlink(src, folder / f"{stem}.gz")
    ds = load_mnist()
    assert ds.y_test[:3].tolist() == [7, 2, 1]
    bad = folder / f"{MNIST_FILES['test_labels']}.gz"
    raw = bytearray(gzip.decompress(bad.read_bytes()))
    raw[8] = 1  # the first test label: 7 -> 1
    bad.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*checksum mismatch"):
        load_mnist()


def test_uncompressed_file_in_cache_is_accepted(cache, fake_spec):
    folder = cache / "mnist"
    folder.mkdir(parents=True)
    for stem, blob in RAW.items():
        (folder / stem).write_bytes(blob)
    assert load_mnist().X_train.shape == (6, 9)


# -- the datasets command -----------------------------------------------------------------


def _cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_datasets_lists_known_and_cache_state(cache, capsys):
    folder = cache / "mnist"
    folder.mkdir(parents=True)
    (folder / f"{MNIST_FILES['train_images']}.gz").write_bytes(GZ[MNIST_FILES["train_images"]])
    code, out, err = _cli(["datasets"], capsys)
    assert code == 0 and err == ""
    for name in ("digits", "mnist", "fashion-mnist"):
        assert re.search(rf"^{re.escape(name)}\s", out, re.M), out
    assert f"{folder}: partial" in out
    assert f"{cache / 'fashion-mnist'}: empty" in out
    assert _cli(["datasets", "list"], capsys)[1] == out


def test_datasets_lists_other_folders_holding_a_dataset(cache, tmp_path, monkeypatch, capsys):
    env = tmp_path / "env"
    env.mkdir()
    for stem, blob in GZ.items():
        (env / f"{stem}.gz").write_bytes(blob)
    monkeypatch.setenv("CONTRACTIVE_DATA_DIR", str(env))
    code, out, _ = _cli(["datasets"], capsys)
    assert code == 0 and f"also found in {env}" in out


@pytest.mark.parametrize("argv", [
    ["datasets", "download", "bogus"],
    ["datasets", "download", "digits"],
    ["datasets", "download"],
    ["datasets", "bogus"],
    ["datasets", "list", "mnist"],
    ["datasets", "list", "--data-dir", "somewhere"],
    ["datasets", "--force"],
])
def test_datasets_bad_arguments(argv, capsys, cache):
    code, out, err = _cli(argv, capsys)
    assert code == 2
    assert out == ""
    lines = err.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("contractive") and "Traceback" not in err
    assert not cache.exists()


def test_datasets_download_command(tmp_path, server, fake_spec, monkeypatch, capsys):
    _set_mirrors(monkeypatch, "mnist", DEAD, server.url)
    dest = tmp_path / "dl"
    code, out, err = _cli(["datasets", "download", "mnist", "--data-dir", str(dest)], capsys)
    assert code == 0, err
    assert str(dest) in out and "verified" in out
    assert len(os.listdir(dest)) == 4
    code, _, _ = _cli(["datasets", "download", "mnist", "--data-dir", str(dest), "--force"],
                      capsys)
    assert code == 0 and server.total == 8


def test_datasets_download_failure_is_one_line(tmp_path, fake_spec, capsys):
    code, out, err = _cli(["datasets", "download", "mnist", "--data-dir", str(tmp_path / "d")],
                          capsys)
    assert code == 2 and out == ""
    assert len(err.rstrip("\n").split("\n")) == 1 and DEAD in err
    assert not (tmp_path / "d").exists()


def test_failed_download_keeps_folders_it_did_not_make(tmp_path, fake_spec):
    (tmp_path / "mine").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("x")
    for folder in (tmp_path / "mine", tmp_path / "full", tmp_path / "full" / "a" / "b"):
        with pytest.raises(ValueError, match="could not download"):
            download_dataset("mnist", folder, mirrors=(DEAD,), progress=False)
    assert (tmp_path / "mine").is_dir() and (tmp_path / "full" / "notes.txt").exists()
    assert not (tmp_path / "full" / "a").exists()


def test_download_timeout_is_bounded():
    assert 0 < download.TIMEOUT_S <= 120
