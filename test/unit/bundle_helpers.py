"""Builders for good and hostile bundles, shared by the bundle, store, CLI and crash tests.

Hostile archives are written member by member with tarfile.TarInfo so each
case has exactly one defect and an otherwise valid, signed file list.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from robot_model_deployer.bundle.filelist import FILE_LIST_NAME, SIGNATURE_NAME, FileEntry, FileList, write_file_list
from robot_model_deployer.bundle.manifest import MANIFEST_NAME
from robot_model_deployer.bundle.signing import TrustStore, generate_keypair, load_private_key, sign_file_list
from robot_model_deployer.testing.models import classifier_manifest, colour_classifier, write_bundle


@dataclass(frozen=True)
class Keys:
    """A trusted signing key (its .pub in ``trust_dir``) and a stranger's key."""

    private: Ed25519PrivateKey
    private_path: Path
    stranger: Ed25519PrivateKey
    trust_dir: Path

    @property
    def trust(self) -> TrustStore:
        return TrustStore.load(self.trust_dir)


def make_keys(directory: Path) -> Keys:
    trusted = generate_keypair(out_dir=directory / "trust", name="release")
    stranger = generate_keypair(out_dir=directory / "stranger", name="stranger")
    # The trust store holds public keys only.
    private_path = directory / "release.key"
    trusted.private_key.rename(private_path)
    return Keys(load_private_key(private_path), private_path, load_private_key(stranger.private_key),
                directory / "trust")


def bundle_files(version: str = "1.0.0", model: bytes | None = None,
                 manifest: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """The files of a good colour-classifier bundle, by bundle path."""
    body = dict(manifest if manifest is not None else classifier_manifest(version=version))
    return {
        MANIFEST_NAME: yaml.safe_dump(body, sort_keys=False).encode("utf-8"),
        "labels.txt": b"red\ngreen\nblue\n",
        "model.onnx": model if model is not None else colour_classifier().SerializeToString(),
    }


def file_list_bytes(files: Mapping[str, bytes]) -> bytes:
    """Canonical files.json for in-memory files."""
    return FileList(tuple(FileEntry(name, len(data), hashlib.sha256(data).hexdigest())
                          for name, data in sorted(files.items()))).to_bytes()


def signature_bytes(listed: bytes, key: Ed25519PrivateKey) -> bytes:
    return sign_file_list(listed, key).to_bytes()


@dataclass(frozen=True)
class Member:
    info: tarfile.TarInfo
    data: bytes | None = None


def regular(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return Member(info, data)


def special(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.devmajor, info.devminor = 1, 3
    return Member(info)


def standard_members(files: Mapping[str, bytes], key: Ed25519PrivateKey | None,
                     listed: Mapping[str, bytes] | None = None) -> list[Member]:
    """files.json (of ``listed``, default ``files``), signature, manifest.yaml, then the rest."""
    listed_bytes = file_list_bytes(files if listed is None else listed)
    members = [regular(FILE_LIST_NAME, listed_bytes)]
    if key is not None:
        members.append(regular(SIGNATURE_NAME, signature_bytes(listed_bytes, key)))
    if MANIFEST_NAME in files:
        members.append(regular(MANIFEST_NAME, files[MANIFEST_NAME]))
    members.extend(regular(name, data) for name, data in sorted(files.items()) if name != MANIFEST_NAME)
    return members


def write_tar(path: Path, members: Iterable[Member], compress: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if compress else "w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            tar.addfile(member.info, None if member.data is None else io.BytesIO(member.data))
    return path


def signed_tar(path: Path, key: Ed25519PrivateKey | None, version: str = "1.0.0", **kwargs: Any) -> Path:
    """A good bundle tar (signed by ``key``, or unsigned if None)."""
    return write_tar(path, standard_members(bundle_files(version, **kwargs), key))


def bundle_directory(path: Path, key: Ed25519PrivateKey | None, version: str = "1.0.0") -> Path:
    """A good unpacked bundle directory with files.json (and signature.json if ``key``)."""
    write_bundle(path, colour_classifier(), classifier_manifest(version=version))
    file_list = write_file_list(path)
    if key is not None:
        (path / SIGNATURE_NAME).write_bytes(signature_bytes(file_list.to_bytes(), key))
    return path
