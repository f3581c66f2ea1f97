"""Ed25519 signing of channel manifests: the pipeline signs, a device verifies with the public key.

What is published is an envelope of exactly two fields, `{"payload": <base64 of the manifest's
canonical JSON bytes>, "signature": <base64 Ed25519 signature of CONTEXT + those bytes>}`. A verifier
checks the signature over the payload bytes and only then parses the manifest out of them, so every
field a device reads (channel, sequence, expiry, key id, model hash...) is covered by the signature:
an envelope with any other field is rejected, and there is nothing outside the payload to change.
CONTEXT separates these signatures from anything else the same key might ever sign.

The private key never lives in the repository: it comes from TINYOPT_SIGNING_KEY (PEM text) or from
the file named by TINYOPT_SIGNING_KEY_FILE, and a key file inside the project directory is refused.
Only Ed25519 keys are accepted (an RSA or EC key is refused with one line).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path

from tinyopt.core.errors import UserError

KEY_ENV, KEY_FILE_ENV = "TINYOPT_SIGNING_KEY", "TINYOPT_SIGNING_KEY_FILE"
CONTEXT = b"tinyopt-manifest-v2\n"
ENVELOPE_KEYS = ("payload", "signature")


def canonical(document: dict) -> bytes:
    """The bytes of a manifest: sorted keys, no spaces, UTF-8 (the same dict always gives the same bytes)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def project_root(start: Path) -> Path:
    """The project a path belongs to: the enclosing git repository's root, else `start` itself."""
    start = start.resolve()
    return next((p for p in (start, *start.parents) if (p / ".git").exists()), start)


def project_of(params_path: Path) -> Path | None:
    """The project a command works on: the params file's directory; with no params file, the git
    repository around the current directory, if any (a home directory is not a project)."""
    if params_path.is_file():
        return params_path.resolve().parent
    root = project_root(Path.cwd())
    return root if (root / ".git").exists() else None


def inside_project(path: Path, project: Path | None) -> bool:
    """Is `path` inside `project` (the params file's directory), the git repository holding it, or
    any git working tree at all (where a `git add -A` would commit it)?"""
    target = path.expanduser().resolve()
    if (project_root(target) / ".git").exists():
        return True
    return project is not None and any(
        root == target or root in target.parents for root in {project.resolve(), project_root(project)}
    )


def generate_keys(directory: Path, force: bool = False) -> tuple[Path, Path]:
    """A new key pair: signing.key (private, mode 600) and signing.pub, both PEM. An existing pair is
    kept unless `force`: overwriting it would orphan every device that trusts the old public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tinyopt.core.files import write_bytes

    private, public = directory / "signing.key", directory / "signing.pub"
    existing = [p.name for p in (private, public) if p.exists()]
    if existing and not force:
        raise UserError(
            f"{directory}: {' and '.join(existing)} exist already; devices trust that key. "
            "Pass --force to replace it (every device then needs the new signing.pub)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_bytes(private, pem)  # its temporary file is created 600, so the key is never readable by others
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    write_bytes(public, key.public_key().public_bytes(serialization.Encoding.PEM, spki))
    public.chmod(0o644)  # written 600 like every temporary file; the public half is for sharing
    return private, public


def load_private_key(project: Path | None = None):
    """The Ed25519 signing key from the environment; `project` (default: the current directory) is
    where a key file must not be."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if os.environ.get(KEY_ENV):
        pem, source = os.environ[KEY_ENV].encode(), KEY_ENV
    elif os.environ.get(KEY_FILE_ENV):
        path = Path(os.environ[KEY_FILE_ENV])
        if inside_project(path, project or Path.cwd()):
            raise UserError(
                f"{path}: the signing key must live outside the project directory (never in the repository)"
            )
        if not path.is_file():
            raise UserError(
                f"{path}: no such signing key file ({KEY_FILE_ENV}); make one with `tinyopt keygen --out DIR`"
            )
        pem, source = path.read_bytes(), str(path)
    else:
        raise UserError(
            f"no signing key: set {KEY_FILE_ENV} to a private key file outside the project "
            f"(`tinyopt keygen --out ~/.tinyopt-keys`) or {KEY_ENV} to its PEM text"
        )
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{source}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(
            f"{source}: holds an {_kind(key)} key; manifests are signed with Ed25519 (make one with `tinyopt keygen`)"
        )
    return key


def load_public_key(path: Path):
    """A device's trust anchor: the Ed25519 public key in PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UserError(
            f"{path}: holds an {_kind(key)} public key; manifests are verified with Ed25519 "
            "(the signing.pub of `tinyopt keygen`)"
        )
    return key


def _kind(key) -> str:
    return type(key).__name__.removeprefix("_").replace("PrivateKey", "").replace("PublicKey", "") or "non-Ed25519"


def public_key_id(public_key) -> str:
    """The first 16 hex digits of the SHA-256 of the raw public key (recorded inside the payload)."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(manifest: dict, private_key) -> bytes:
    """The published bytes of `manifest`: the two-field envelope, as JSON."""
    payload = canonical(manifest)
    signature = private_key.sign(CONTEXT + payload)
    envelope = {"payload": base64.b64encode(payload).decode(), "signature": base64.b64encode(signature).decode()}
    return (json.dumps(envelope, indent=2) + "\n").encode()


def open_envelope(published: bytes | dict, public_key) -> tuple[dict, bytes]:
    """(manifest, payload bytes) when `published` is a well-formed envelope whose signature verifies
    under `public_key`; a one-line UserError naming what is wrong otherwise."""
    from cryptography.exceptions import InvalidSignature

    envelope = published
    if isinstance(published, (bytes, str)):
        try:
            envelope = json.loads(published)
        except ValueError as exc:
            raise UserError(f"the manifest is not JSON ({exc})") from None
    if not isinstance(envelope, dict):
        raise UserError("the manifest is not a JSON object with payload and signature")
    if sorted(envelope) != sorted(ENVELOPE_KEYS):
        found = ", ".join(sorted(map(str, envelope))) or "none"
        raise UserError(
            f"the manifest must have exactly the fields payload and signature (found: {found}): "
            "a field outside the signed payload, or not a schema-2 signed manifest"
        )
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signature"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise UserError("the manifest's payload or signature is not base64") from None
    try:
        public_key.verify(signature, CONTEXT + payload)
    except InvalidSignature:
        raise UserError("the manifest's signature does not verify: it was altered or signed by another key") from None
    try:
        manifest = json.loads(payload)
    except ValueError:
        raise UserError("the manifest's signed payload is not JSON (a signer bug)") from None
    if not isinstance(manifest, dict):
        raise UserError("the manifest's signed payload is not a JSON object (a signer bug)")
    return manifest, payload


def peek(published: bytes) -> dict | None:
    """The manifest inside an envelope WITHOUT checking its signature (for display only), or None."""
    try:
        manifest = json.loads(base64.b64decode(json.loads(published)["payload"], validate=True))
        return manifest if isinstance(manifest, dict) else None
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
