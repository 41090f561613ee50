"""Ed25519 keys, detached signatures over ``files.json``, and the trust store.

Ed25519 via ``cryptography`` (already a dependency): signing and checking
work offline, keys are 32 bytes and signatures 64, so a robot needs nothing
but a directory of public key files. See docs/bundle-format.md.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from robot_model_deployer.bundle.errors import BundleError, BundleFormatError, SignatureError
from robot_model_deployer.bundle.filelist import FILE_LIST_NAME, SIGNATURE_NAME, load_metadata_json
from robot_model_deployer.bundle.safe_io import read_regular_file

SIGNATURE_FORMAT = 1
ALGORITHM = "ed25519"
MAX_SIGNATURE_BYTES = 4096
MAX_KEY_FILE_BYTES = 16 << 10
PUBLIC_KEY_SUFFIX = ".pub"
PRIVATE_KEY_SUFFIX = ".key"
_KEY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not an Ed25519 key."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class KeyPairFiles:
    """Where ``generate_keypair`` wrote a key pair."""

    private_key: Path
    public_key: Path
    key_id: str


def generate_keypair(*, out_dir: Path, name: str = "signing") -> KeyPairFiles:
    """Write ``NAME.key`` (PKCS#8 PEM, mode 0600) and ``NAME.pub``; never overwrites."""
    if not _KEY_NAME_RE.match(name):
        raise KeyFileError(f"key name {name!r} must be 1-64 characters of letters, digits, '_', '.', '-'")
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path = out_dir / f"{name}{PRIVATE_KEY_SUFFIX}"
    public_path = out_dir / f"{name}{PUBLIC_KEY_SUFFIX}"
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(f"{path} already exists; choose another --name or remove it first")
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
    public_pem = private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    # Create with 0600 from the start: chmod after writing leaves a window.
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(private_pem)
    public_path.write_bytes(public_pem)
    return KeyPairFiles(private_path, public_path, key_id(private_key.public_key()))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an unencrypted PKCS#8 PEM Ed25519 private key (a regular file of at most MAX_KEY_FILE_BYTES)."""
    try:
        data = read_regular_file(path, MAX_KEY_FILE_BYTES, follow_links=True)
        key = serialization.load_pem_private_key(data, password=None)
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror}") from None
    except BundleError as exc:
        raise KeyFileError(f"private key {exc}") from None
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key; make one with rmd keys generate")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a PEM Ed25519 public key: a regular file (a link to one is fine) of at most MAX_KEY_FILE_BYTES."""
    try:
        key = serialization.load_pem_public_key(read_regular_file(path, MAX_KEY_FILE_BYTES, follow_links=True))
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from None
    except BundleError as exc:
        raise KeyFileError(f"public key {exc}; a trust store holds small .pub files made by rmd keys generate") \
            from None
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 public key; make one with rmd keys generate")
    return key


@dataclass(frozen=True)
class Signature:
    """The detached signature over ``files.json`` as stored in ``signature.json``."""

    key_id: str
    signature: bytes

    def to_bytes(self) -> bytes:
        body = {"format": SIGNATURE_FORMAT, "algorithm": ALGORITHM, "key_id": self.key_id,
                "signed_file": FILE_LIST_NAME, "signature": base64.b64encode(self.signature).decode("ascii")}
        return (json.dumps(body, sort_keys=True, indent=1) + "\n").encode("ascii")


def sign_file_list(file_list_bytes: bytes, private_key: Ed25519PrivateKey) -> Signature:
    return Signature(key_id(private_key.public_key()), private_key.sign(file_list_bytes))


def parse_signature(data: bytes, source: str = SIGNATURE_NAME) -> Signature:
    """Parse ``signature.json``; raises BundleFormatError naming the problem."""
    body = load_metadata_json(data, source, MAX_SIGNATURE_BYTES)
    expected = {"format", "algorithm", "key_id", "signed_file", "signature"}
    if not isinstance(body, dict) or set(body) != expected:
        raise BundleFormatError(f"{source} must have exactly the keys {', '.join(sorted(expected))}")
    if body["format"] != SIGNATURE_FORMAT or body["algorithm"] != ALGORITHM or body["signed_file"] != FILE_LIST_NAME:
        raise BundleFormatError(f"{source}: this robot reads format {SIGNATURE_FORMAT} {ALGORITHM} signatures "
                                f"over {FILE_LIST_NAME}, got format {body['format']!r} {body['algorithm']!r} "
                                f"over {body['signed_file']!r}")
    if not isinstance(body["key_id"], str) or not _KEY_ID_RE.match(body["key_id"]):
        raise BundleFormatError(f"{source}: key_id must be 16 lowercase hex digits")
    try:
        raw = base64.b64decode(str(body["signature"]), validate=True)
    except binascii.Error:
        raise BundleFormatError(f"{source}: signature is not base64") from None
    if len(raw) != 64:
        raise BundleFormatError(f"{source}: an Ed25519 signature has 64 bytes, got {len(raw)}")
    return Signature(body["key_id"], raw)


class TrustStore:
    """The public keys a robot accepts bundles from: every ``*.pub`` file in one directory."""

    def __init__(self, keys: dict[str, Ed25519PublicKey], source: str) -> None:
        self._keys = dict(keys)
        self.source = source

    @classmethod
    def load(cls, directory: Path) -> "TrustStore":
        """Read every ``*.pub`` in ``directory``; a broken key file is an error, not skipped."""
        if not directory.is_dir():
            raise KeyFileError(f"trust store {directory} is not a directory of {PUBLIC_KEY_SUFFIX} files")
        keys = {}
        for path in sorted(directory.glob(f"*{PUBLIC_KEY_SUFFIX}")):
            public_key = load_public_key(path)
            keys[key_id(public_key)] = public_key
        return cls(keys, str(directory))

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of the trusted keys, for logs and status."""
        return tuple(sorted(self._keys))

    def verify(self, file_list_bytes: bytes, signature: Signature) -> None:
        """Raise SignatureError unless a trusted key made ``signature`` over these bytes."""
        public_key = self._keys.get(signature.key_id)
        if public_key is None:
            raise SignatureError(f"bundle is signed by key {signature.key_id}, which is not in the trust store "
                                 f"{self.source}; add the signer's .pub file there if you trust it")
        try:
            public_key.verify(signature.signature, file_list_bytes)
        except InvalidSignature:
            raise SignatureError(f"signature by key {signature.key_id} does not match {FILE_LIST_NAME}: "
                                 "the bundle was altered after signing; get a fresh copy from its author") from None
