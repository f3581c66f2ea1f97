"""Ed25519 signing of channel manifests: the pipeline signs, a device verifies with the public key.

The private key never lives in the repository: it comes from TINYOPT_SIGNING_KEY (PEM text) or from
the file named by TINYOPT_SIGNING_KEY_FILE, and a key file inside the project directory is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from tinyopt.errors import UserError

KEY_ENV, KEY_FILE_ENV = "TINYOPT_SIGNING_KEY", "TINYOPT_SIGNING_KEY_FILE"


def canonical(document: dict) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def generate_keys(directory: Path) -> tuple[Path, Path]:
    """A new key pair: signing.key (private, mode 600) and signing.pub, both PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private, public = directory / "signing.key", directory / "signing.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))  # fmt: skip
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    return private, public


def _inside_project(path: Path) -> bool:
    project = Path.cwd().resolve()
    return project == path.resolve() or project in path.resolve().parents


def load_private_key():
    from cryptography.hazmat.primitives import serialization

    if os.environ.get(KEY_ENV):
        pem = os.environ[KEY_ENV].encode()
        source = KEY_ENV
    elif os.environ.get(KEY_FILE_ENV):
        path = Path(os.environ[KEY_FILE_ENV])
        if _inside_project(path):
            raise UserError(f"{path}: the signing key must live outside the project directory (never in the repository)")
        if not path.is_file():
            raise UserError(f"{path}: no such signing key file ({KEY_FILE_ENV}); make one with `tinyopt keygen --out DIR`")
        pem, source = path.read_bytes(), str(path)
    else:
        raise UserError(f"no signing key: set {KEY_FILE_ENV} to a private key file outside the project "
                        f"(`tinyopt keygen --out ~/.tinyopt-keys`) or {KEY_ENV} to its PEM text")  # fmt: skip
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise UserError(f"{source}: not a PEM private key ({exc})") from None


def public_key_id(public_key) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(manifest: dict) -> dict:
    """{'manifest': ..., 'signature': base64, 'key_id': ...}: what is published."""
    key = load_private_key()
    return {"manifest": manifest, "signature": base64.b64encode(key.sign(canonical(manifest))).decode(),
            "key_id": public_key_id(key.public_key())}  # fmt: skip


def load_public_key(path: Path):
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable PEM public key ({exc})") from None


def check(document: dict, public_key) -> dict:
    """The manifest if its signature is good under `public_key`; UserError otherwise."""
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(base64.b64decode(document["signature"]), canonical(document["manifest"]))
    except (InvalidSignature, KeyError, TypeError, ValueError):
        raise UserError("the manifest's signature does not verify: it was altered or signed by another key") from None
    return document["manifest"]
