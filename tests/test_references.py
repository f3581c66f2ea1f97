"""The paper's reference models without ../shared/: downloaded from the authors' repository (here a real HTTP
server on loopback holding copies at the repository's paths), each checked against its pinned sha256; a machine
that can neither find nor download them says so in one line."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading

import pytest

from tests.conftest import REPO, free_port
from tinyopt.core.errors import UserError
from tinyopt.core.files import sha256_file
from tinyopt.params import ReferenceParams
from tinyopt.run.references import PAPER_MODELS, find_references, paper_models

SHARED = REPO.parent / "shared" / "reference" / "seed-cnn1"
TWO = {name: PAPER_MODELS[name] for name in ("base-f32.tflite", "graph-int8-floatio.tflite")}

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="needs copies of the paper's models in ../shared/")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test's output stays the test's
        pass


@pytest.fixture
def authors_repository(tmp_path):
    """A loopback HTTP server holding copies of two published files at their paths in the authors' repository;
    yields (its root on disk, the URL template)."""
    root = tmp_path / "served"
    for name, published in TWO.items():
        (root / published.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED / name, root / published.path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/{{path}}"
    server.shutdown()
    server.server_close()


@needs_shared
def test_published_files_are_downloaded_checked_and_moved_in(tmp_path, authors_repository):
    _, url = authors_repository
    target = tmp_path / "data" / "reference" / "seed-cnn1"
    settings = ReferenceParams(dir=str(tmp_path / "no-local-copy"), url=url)
    assert paper_models(settings, TWO, target) == (target, None)
    assert {p.name: sha256_file(p) for p in target.iterdir()} == {name: f.sha256 for name, f in TWO.items()}
    # A second run uses what is there without asking the server.
    assert paper_models(settings.model_copy(update={"url": "http://127.0.0.1:9/{path}"}), TWO, target) == (target, None)


@needs_shared
def test_a_tampered_download_is_refused_in_one_line_and_nothing_is_written(tmp_path, authors_repository):
    root, url = authors_repository
    tampered = root / TWO["graph-int8-floatio.tflite"].path
    published = tampered.read_bytes()
    tampered.write_bytes(published[:100] + bytes([published[100] ^ 1]) + published[101:])  # one bit flipped
    target = tmp_path / "data" / "reference" / "seed-cnn1"
    with pytest.raises(UserError) as refused:
        paper_models(ReferenceParams(dir=str(tmp_path / "no-local-copy"), url=url), TWO, target)
    assert str(refused.value) == (
        f"{url.format(path=TWO['graph-int8-floatio.tflite'].path)}: not the published graph-int8-floatio.tflite "
        "(sha256 differs); refused, nothing written"
    )
    assert list(target.parent.iterdir()) == []  # no directory, no staging left, not even the good file


def test_offline_without_a_local_copy_says_once_where_to_put_them(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/{{path}}"  # nothing listens: a machine without network
    local = tmp_path / "shared" / "reference" / "seed-cnn1"
    target = tmp_path / "data" / "reference" / "seed-cnn1"
    directory, note = paper_models(ReferenceParams(dir=str(local), url=url), TWO, target)
    first = url.format(path=TWO["base-f32.tflite"].path)
    assert directory is None
    assert note == (
        f"reference models skipped: not in {target} and not downloadable ({first}: <urlopen error [Errno 111] "
        f"Connection refused>); put the 2 .tflite files that tinyopt/run/references.py lists in {local}"
    )
    assert list(target.parent.iterdir()) == []
    directory, note = paper_models(ReferenceParams(dir=str(local), url=None), TWO, target)
    assert (directory, note) == (
        None,
        f"reference models skipped: not in {target} and reference.url is null; put the 2 .tflite files that "
        f"tinyopt/run/references.py lists in {local}",
    )


def test_a_local_copy_is_used_as_it_is_and_an_altered_file_in_it_refused(tmp_path):
    local = tmp_path / "refs"
    local.mkdir()
    (local / "base-f32.tflite").write_bytes(b"not the authors' model")
    settings = ReferenceParams(dir=str(local), url=None)
    with pytest.raises(UserError) as refused:
        paper_models(settings, TWO, tmp_path / "data")
    assert str(refused.value) == (
        f"{local / 'base-f32.tflite'}: not the published base-f32.tflite (sha256 differs); "
        "replace it with the authors' file"
    )
    (local / "base-f32.tflite").unlink()
    assert paper_models(settings, TWO, tmp_path / "data") == (local, None)  # fewer files: the user's choice
    assert not (tmp_path / "data").exists()


def test_no_reference_dir_means_no_reference_models_and_nothing_fetched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_references(ReferenceParams(dir=None), "fashion-mnist", [28, 28]) == (
        [],
        "no reference models configured (reference.dir is null)",
    )
    assert os.listdir(tmp_path) == []


@needs_shared
def test_the_pinned_digests_are_the_published_files():
    assert {name: sha256_file(SHARED / name) for name in PAPER_MODELS} == {n: f.sha256 for n, f in PAPER_MODELS.items()}
    assert sorted(p.name for p in SHARED.glob("*.tflite")) == sorted(PAPER_MODELS)
