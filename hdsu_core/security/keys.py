"""The installation's Ed25519 signing key (the ``cryptography`` package): created on first use
under ``HDSU_HOME/keys`` with owner-only permissions; receipts and reports are signed with it, and
anyone holding the public key verifies them offline, without the database.

A signed document is the document plus a ``signature`` entry: the algorithm, the public key (raw,
base64) with its sha256, and the signature over the canonical JSON of the document without it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hdsu_core import paths

ALGORITHM = "Ed25519"


class SignatureError(ValueError):
    """A signature is missing, malformed, or does not verify."""


def key_dir() -> Path:
    """``HDSU_HOME/keys``; ``HDSU_KEY_DIR`` moves it (the tests sign with a key of their own)."""
    return Path(os.environ.get("HDSU_KEY_DIR", paths.home() / "keys"))


def canonical_json(doc) -> str:
    """The one canonical JSON of receipts and signed documents (sorted keys, no spaces): what is
    hashed and signed."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _canonical(doc: dict) -> bytes:
    return canonical_json(doc).encode()


def private_key() -> Ed25519PrivateKey:
    """The installation key; created (0600, in a 0700 directory) when there is none yet."""
    path = key_dir() / "installation_ed25519.pem"
    if not path.exists():
        key_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        try:
            os.link(tmp, path)  # atomic and never overwrites a key another process just made
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 private key")
    return key


def public_key_pem() -> bytes:
    return (
        private_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public_key(pem_or_path: bytes | str | Path) -> Ed25519PublicKey:
    data = Path(pem_or_path).read_bytes() if isinstance(pem_or_path, (str, Path)) else pem_or_path
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise SignatureError(f"not a PEM public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("the public key is not an Ed25519 key")
    return key


def signature_block(data: bytes) -> dict:
    key = private_key()
    raw = _raw(key.public_key())
    return {
        "algorithm": ALGORITHM,
        "public_key": base64.b64encode(raw).decode(),
        "public_key_sha256": hashlib.sha256(raw).hexdigest(),
        "value": base64.b64encode(key.sign(data)).decode(),
    }


def sign_document(doc: dict) -> dict:
    """``doc`` plus its ``signature`` entry (any old signature is replaced)."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    return body | {"signature": signature_block(_canonical(body))}


def verify_bytes(data: bytes, block: dict, public_key: Ed25519PublicKey | None = None) -> str:
    """Check ``block`` (a signature entry) over ``data``; returns which key was used. With no
    ``public_key`` the key embedded in the block is used: that proves the data is unchanged
    since it was signed, not who signed it."""
    if not isinstance(block, dict) or block.get("algorithm") != ALGORITHM:
        raise SignatureError("no Ed25519 signature")
    try:
        embedded = Ed25519PublicKey.from_public_bytes(base64.b64decode(block["public_key"]))
        value = base64.b64decode(block["value"])
    except (KeyError, ValueError) as e:
        raise SignatureError(f"malformed signature: {e}") from None
    key = public_key or embedded
    if public_key is not None and _raw(public_key) != _raw(embedded):
        raise SignatureError("signed with another key than the one given")
    try:
        key.verify(value, data)
    except InvalidSignature:
        raise SignatureError("the signature does not match the content: it was changed after signing") from None
    return "given public key" if public_key is not None else "the key embedded in the signature"


def verify_document(doc: dict, public_key: Ed25519PublicKey | None = None) -> str:
    body = {k: v for k, v in doc.items() if k != "signature"}
    if "signature" not in doc:
        raise SignatureError("the document carries no signature")
    return verify_bytes(_canonical(body), doc["signature"], public_key)
