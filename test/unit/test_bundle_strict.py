"""Issue 10's stricter rules: names, versions, metadata JSON and local files, each refused with one clear reason."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from bundle_helpers import Keys, bundle_directory, file_list_bytes, make_keys
from robot_model_deployer.bundle.errors import BundleFormatError, UnsafeArchiveError
from robot_model_deployer.bundle.extract import open_bundle
from robot_model_deployer.bundle.filelist import MAX_JSON_DEPTH, check_bundle_path, parse_file_list
from robot_model_deployer.bundle.semver import SemVer
from robot_model_deployer.bundle.signing import KeyFileError, TrustStore


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.mark.parametrize("name, match", [
    ("x" * 256, "part longer than 255 bytes"),
    ("é" * 128, "part longer than 255 bytes"),          # 128 characters, 256 bytes
    ("dd/" * 400 + "f", "longer than 1024 bytes"),
    ("a\u202egnp.onnx", "printable"),
    ("a\u200fb", "printable"),
    ("lone\ud800", "printable"),
    ("c1\x9bcontrol", "printable"),
    ("files.json/x", "under the metadata name files.json"),
    ("signature.json/x", "under the metadata name"),
    ("manifest.yaml/x", "under the metadata name"),
], ids=lambda value: value[:24].encode("unicode_escape").decode("ascii"))
def test_names_are_bounded_printable_and_not_under_metadata(name, match):
    with pytest.raises(UnsafeArchiveError, match=match) as refused:
        check_bundle_path(name)
    message = str(refused.value)
    assert message.isprintable() and len(message) < 300


def test_ordinary_names_pass():
    for name in ("model.onnx", "calibration/ö 1.png", "a/b/c/" + "x" * 255, "模型/标签.txt"):
        assert check_bundle_path(name) == name


def test_a_file_and_a_directory_of_the_same_name_are_refused():
    listed = file_list_bytes({"images": b"x", "images/1.png": b"y", "manifest.yaml": b"m"})
    with pytest.raises(UnsafeArchiveError, match="both as a file and as the directory"):
        parse_file_list(listed)


@pytest.mark.parametrize("data, match", [
    (b'{"files":[],"format":1,"format":1}\n', "appears twice"),
    (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "deeper than"),
    (b"[" * 500_000, "deeper than"),
    (b'{"a":"' + b"[" * 1000 + b'"}', "exactly the keys"),   # brackets inside a string do not count
], ids=["duplicate key", "one level too deep", "half a million brackets", "brackets in a string"])
def test_metadata_json_refuses_duplicate_keys_and_deep_nesting(data, match):
    started = time.perf_counter()
    with pytest.raises(BundleFormatError, match=match):
        parse_file_list(data)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("text, match", [
    ("1." * 40 + "0", "longer than 64"),
    ("1.0.0-" + "a" * 70, "longer than 64"),
    ("1234567890.0.0", "more than 9 digits"),
    ("1.0.0-rc.12345678901", "more than 9 digits"),
])
def test_versions_are_bounded(text, match):
    with pytest.raises(ValueError, match=match):
        SemVer.parse(text)


def test_a_fifo_named_files_json_is_refused_without_blocking(tmp_path: Path, keys: Keys):
    bundle = bundle_directory(tmp_path / "b", keys.private)
    (bundle / "files.json").unlink()
    os.mkfifo(bundle / "files.json")
    started = time.perf_counter()
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        open_bundle(bundle)
    assert time.perf_counter() - started < 1.0


def test_a_fifo_given_as_the_bundle_is_refused_without_blocking(tmp_path: Path):
    os.mkfifo(tmp_path / "bundle.tar")
    started = time.perf_counter()
    with pytest.raises(BundleFormatError):
        open_bundle(tmp_path / "bundle.tar")
    assert time.perf_counter() - started < 1.0


def test_a_symlinked_bundle_file_is_refused(tmp_path: Path, keys: Keys):
    bundle = bundle_directory(tmp_path / "b", keys.private)
    (tmp_path / "outside.json").write_bytes((bundle / "files.json").read_bytes())
    (bundle / "files.json").unlink()
    (bundle / "files.json").symlink_to(tmp_path / "outside.json")
    with pytest.raises(UnsafeArchiveError, match="must not be a symlink"):
        open_bundle(bundle)


@pytest.mark.parametrize("make", ["dev_zero_link", "huge", "fifo", "directory"])
def test_bad_trust_store_files_are_refused_quickly(tmp_path: Path, keys: Keys, make: str):
    trust = tmp_path / "trust"
    trust.mkdir()
    pub = trust / "evil.pub"
    if make == "dev_zero_link":
        pub.symlink_to("/dev/zero")
    elif make == "huge":
        with open(pub, "wb") as out:
            out.truncate(1 << 30)  # a sparse 1 GiB file
    elif make == "fifo":
        os.mkfifo(pub)
    else:
        pub.mkdir()
    started = time.perf_counter()
    with pytest.raises(KeyFileError) as refused:
        TrustStore.load(trust)
    assert time.perf_counter() - started < 1.0
    assert "evil.pub" in str(refused.value)


def test_a_huge_trust_store_file_is_refused_by_its_size(tmp_path: Path):
    trust = tmp_path / "trust"
    trust.mkdir()
    with open(trust / "big.pub", "wb") as out:
        out.truncate(1 << 30)
    with pytest.raises(KeyFileError, match="1073741824 bytes, larger than"):
        TrustStore.load(trust)


def test_refusals_never_embed_a_whole_hostile_value():
    body = {"files": [{"path": "\x1b]0;pwned\x07" + "x" * 10_000, "sha256": "0" * 64, "size": 1}], "format": 1}
    data = (json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n").encode("ascii")
    with pytest.raises(UnsafeArchiveError) as refused:
        parse_file_list(data)
    message = str(refused.value)
    assert "\x1b" not in message and "\x07" not in message and len(message) < 400
