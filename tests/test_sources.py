"""Finding, verifying and downloading dataset files; never the network: mirrors are local."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import os
import shutil
import threading

import pytest
import torch
from conftest import make_fake_mnist

from convkit.data import load_dataset, locate
from convkit.data.sources import cache_dir, resolve, search_roots
from convkit.errors import DataError


def test_search_order(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "CONVKIT_DATA", os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")])
    )
    roots = search_roots(tmp_path / "d")
    assert roots == [
        (tmp_path / "d", "--data-dir"),
        (tmp_path / "a", "CONVKIT_DATA"),
        (tmp_path / "b", "CONVKIT_DATA"),
        (cache_dir(), "user cache"),
    ]
    assert str(cache_dir()).startswith(os.environ["XDG_CACHE_HOME"])


def test_data_dir_wins_over_convkit_data_and_cache(tmp_path, monkeypatch):
    spec = make_fake_mnist(tmp_path / "first")
    make_fake_mnist(tmp_path / "second")
    make_fake_mnist(cache_dir().parent.parent / "x")  # unrelated folder
    monkeypatch.setenv("CONVKIT_DATA", str(tmp_path / "second"))
    found = locate(spec, tmp_path / "first").paths
    assert all(p.parent == tmp_path / "first" / "fake-mnist" for p in found.values())
    found = locate(spec).paths
    assert all(p.parent == tmp_path / "second" / "fake-mnist" for p in found.values())


def test_second_convkit_data_folder_is_searched(tmp_path, monkeypatch):
    spec = make_fake_mnist(tmp_path / "b")
    monkeypatch.setenv("CONVKIT_DATA", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert not locate(spec).missing


def test_corrupt_copy_is_refused_and_a_good_one_used(tmp_path, monkeypatch):
    spec = make_fake_mnist(tmp_path / "good")
    bad = tmp_path / "bad" / "fake-mnist"
    shutil.copytree(tmp_path / "good" / "fake-mnist", bad)
    name = "t10k-labels-idx1-ubyte.gz"
    data = bytearray((bad / name).read_bytes())
    data[20] ^= 1  # same size, different bytes
    (bad / name).write_bytes(bytes(data))
    monkeypatch.setenv(
        "CONVKIT_DATA", os.pathsep.join([str(tmp_path / "bad"), str(tmp_path / "good")])
    )
    res = locate(spec)
    assert res.paths[name] == tmp_path / "good" / "fake-mnist" / name
    assert [(p, why.split()[0]) for p, why in res.rejected] == [(bad / name, "sha256")]


def test_checksum_failure_is_never_used(tmp_path):
    spec = make_fake_mnist(tmp_path)
    f = tmp_path / "fake-mnist" / "train-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(DataError) as err:
        load_dataset(spec, tmp_path)
    msg = str(err.value)
    assert "1 of 4 files not found: train-labels-idx1-ubyte.gz" in msg
    assert f"{f}: size" in msg and "Refused (failed verification, never used)" in msg


def test_offline_message_names_files_folders_and_what_to_do(tmp_path, monkeypatch):
    spec = make_fake_mnist(tmp_path / "elsewhere")
    monkeypatch.setenv("CONVKIT_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as err:
        resolve(spec, tmp_path / "mine")
    msg = str(err.value)
    assert "fake-mnist: 4 of 4 files not found: train-images-idx3-ubyte.gz" in msg
    for folder in (
        tmp_path / "mine" / "fake-mnist",
        tmp_path / "env" / "fake-mnist",
        cache_dir() / "fake-mnist",
    ):
        assert str(folder) in msg
    assert "Downloads are off" in msg
    assert "To place the files by hand" in msg and "convkit data check fake-mnist" in msg


def _mirror_spec(tmp_path, mirrors):
    spec = make_fake_mnist(tmp_path / "origin")
    return dataclasses.replace(spec, mirrors=tuple(mirrors))


def test_download_from_mirror_verifies_and_places_files(tmp_path, monkeypatch):
    monkeypatch.delenv("CONVKIT_OFFLINE")
    spec = _mirror_spec(tmp_path, [(tmp_path / "origin" / "fake-mnist").as_uri() + "/"])
    data = load_dataset(spec, log=lambda m: None)
    assert len(data.train) == 60 and data.train.images.dtype == torch.uint8
    assert sorted(p.parent for p in data.files.values())[0] == cache_dir() / "fake-mnist"
    assert sorted(os.listdir(cache_dir() / "fake-mnist")) == sorted(
        f.name for f in spec.sources[0].files
    )


def test_bad_mirror_is_refused_and_next_mirror_used(tmp_path, monkeypatch):
    monkeypatch.delenv("CONVKIT_OFFLINE")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    spec = make_fake_mnist(tmp_path / "origin")
    for f in spec.sources[0].files:  # same names, wrong bytes
        (wrong / f.name).write_bytes(b"\0" * f.size)
    spec = dataclasses.replace(
        spec, mirrors=(wrong.as_uri() + "/", (tmp_path / "origin" / "fake-mnist").as_uri() + "/")
    )
    messages = []
    _, paths = resolve(spec, tmp_path / "dest", log=messages.append)
    assert all(p.parent == tmp_path / "dest" / "fake-mnist" for p in paths.values())
    assert sum("downloaded file does not match: sha256" in m for m in messages) == 4
    assert not locate(spec, tmp_path / "dest").missing


def test_all_mirrors_failing_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.delenv("CONVKIT_OFFLINE")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    spec = make_fake_mnist(tmp_path / "origin")
    first = spec.sources[0].files[0]
    (wrong / first.name).write_bytes(b"x" * first.size)
    spec = dataclasses.replace(spec, mirrors=(wrong.as_uri() + "/", "http://127.0.0.1:9/"))
    with pytest.raises(DataError) as err:
        resolve(spec, tmp_path / "dest", log=lambda m: None)
    msg = str(err.value)
    assert "Download failed:" in msg and "http://127.0.0.1:9/train-images-idx3-ubyte.gz" in msg
    dest = tmp_path / "dest" / "fake-mnist"
    assert not dest.exists() or os.listdir(dest) == []  # no partial or temporary files


def test_download_over_http_on_loopback(tmp_path, monkeypatch):
    monkeypatch.delenv("CONVKIT_OFFLINE")
    spec = make_fake_mnist(tmp_path / "origin")
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "origin" / "fake-mnist")
    )
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        spec = dataclasses.replace(spec, mirrors=(f"http://127.0.0.1:{server.server_port}/",))
        data = load_dataset(spec, tmp_path / "dest", log=lambda m: None)
    finally:
        server.shutdown()
        server.server_close()
    assert len(data.test) == 20


def test_load_fake_dataset_shapes(tmp_path):
    spec = make_fake_mnist(tmp_path)
    data = load_dataset(spec, tmp_path)
    assert data.train.images.shape == (60, 1, 28, 28) and data.train.labels.dtype == torch.int64
    assert data.test.images.shape == (20, 1, 28, 28) and data.classes == tuple("0123456789")


def test_real_mnist_checks_out(real_data):
    data = load_dataset("mnist", real_data)
    assert len(data.train) == 60000 and len(data.test) == 10000
    assert data.train.labels.bincount().tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]


def test_cli_data_check_reports_refused_files(capsys, tmp_path):
    from convkit.cli import main

    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not the real file")
    assert main(["data", "check", "mnist", "--data-dir", str(tmp_path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)[0]
    assert report["ok"] is False
    assert report["rejected"] == [
        {
            "path": str(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"),
            "problem": "size 17 bytes, expected 4,542",
        }
    ]
    # Checking every dataset: a dataset never downloaded is fine, a corrupt file is not.
    assert main(["data", "check", "--data-dir", str(tmp_path)]) == 1
    assert "refused" in capsys.readouterr().out


def test_cli_data_check_and_list_on_real_data(capsys, real_data):
    from convkit.cli import main

    assert main(["data", "check", "mnist", "--data-dir", str(real_data)]) == 0
    assert "mnist: ok" in capsys.readouterr().out
    assert main(["data", "list", "--data-dir", str(real_data), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["mnist"]["available"] and rows["mnist"]["image_shape"] == [1, 28, 28]
    assert "fashion-mnist" in rows
