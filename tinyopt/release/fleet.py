"""The fleet bucket: content-addressed model objects and signed channel manifests, on S3 via boto3.

Layout under the prefix:
  models/<sha256>.tflite                    the model bytes, named by their hash (written once)
  channels/<channel>/manifest.json          what devices on the channel download now
  channels/<channel>/history/<n>.json       every manifest ever published there, numbered
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from tinyopt.core.errors import UserError
from tinyopt.core.masking import shown
from tinyopt.params import FleetParams

# Objects are read in pieces of this size: a model (or whatever was put in its place) is never held whole.
CHUNK = 1 << 20
MISSING = "is missing"


class FleetStore:
    def __init__(self, settings: FleetParams):
        from botocore.config import Config

        self.settings = settings
        self.bucket, self.prefix = settings.bucket, settings.prefix.strip("/")
        # Transient errors (throttling, 5xx, dropped connections) are retried with exponential backoff.
        self.s3 = self._client(
            Config(retries={"max_attempts": 6, "mode": "standard"}, connect_timeout=5, read_timeout=30)
        )

    def _client(self, config):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.settings.endpoint_url, region_name=self.settings.region, config=config
        )

    def require_reachable(self, timeout: float = 5.0) -> None:
        """Fail fast, in one line, when the S3 endpoint does not answer (the client would retry with backoff
        first). Any answer will do, a refusal too: what the credentials may do, the calls themselves say."""
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as NoConnection

        probe = self._client(Config(retries={"total_max_attempts": 1}, connect_timeout=timeout, read_timeout=timeout))
        try:
            probe.head_bucket(Bucket=self.bucket)
        except ClientError:
            pass
        except (NoConnection, HTTPClientError) as exc:
            raise UserError(
                f"S3 endpoint {shown(probe.meta.endpoint_url)} is unreachable ({exc}); start it, or fix "
                "fleet.endpoint_url"
            ) from None
        except BotoCoreError as exc:
            raise UserError(f"S3 failed: {exc} (check fleet.endpoint_url and your AWS credentials)") from None

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _call(self, what: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            if code == "NoSuchBucket":
                raise UserError(f"s3://{self.bucket}: no such bucket; create it or set fleet.bucket") from None
            raise UserError(
                f"s3://{self.bucket}: {what} failed ({code}: {exc.response['Error'].get('Message', '')})"
            ) from None
        except BotoCoreError as exc:
            raise UserError(f"S3 {what} failed: {exc} (check fleet.endpoint_url and your AWS credentials)") from None

    def get(self, key: str) -> bytes | None:
        response = self._call(f"reading {key}", self.s3.get_object, Key=key)
        return None if response is None else response["Body"].read()

    def put(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        self._call(f"writing {key}", self.s3.put_object, Key=key, Body=body, ContentType=content_type)

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        """The object's size in bytes, from its headers (nothing is read); None when there is none."""
        head = self._call(f"checking {key}", self.s3.head_object, Key=key)
        return None if head is None else head["ContentLength"]

    def stream(self, key: str, limit: int, sink: BinaryIO | None = None) -> tuple[str, int] | None:
        """(sha256, bytes read) of the object, read a chunk at a time (each also written to `sink`) and
        stopped once more than `limit` bytes came (an object swapped after its size was checked);
        None when there is none."""
        from botocore.exceptions import BotoCoreError

        response = self._call(f"reading {key}", self.s3.get_object, Key=key)
        if response is None:
            return None
        digest, read = hashlib.sha256(), 0
        try:
            for chunk in response["Body"].iter_chunks(CHUNK):
                digest.update(chunk)
                read += len(chunk)
                if sink is not None:
                    sink.write(chunk)
                if read > limit:
                    break
        except BotoCoreError as exc:
            raise UserError(f"S3 reading {key} failed: {exc} (check fleet.endpoint_url)") from None
        finally:
            response["Body"].close()
        return digest.hexdigest(), read

    def mismatch(self, key: str, sha256: str, size: int) -> str | None:
        """Why the object at `key` is not exactly `size` bytes with this sha256 (MISSING, "is N bytes,
        not M", "does not match its sha256"), or None when it is. The size is checked before any byte
        is read; the bytes are hashed as they stream."""
        found = self.size(key)
        if found is None:
            return MISSING
        if found != size:
            return f"is {found} bytes, not {size}"
        streamed = self.stream(key, size)
        if streamed is None:
            return MISSING
        return None if streamed == (sha256, size) else "does not match its sha256"

    def list(self, prefix: str) -> list[str]:
        keys, token = [], None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call(f"listing {prefix}", self.s3.list_objects_v2, Prefix=prefix, **extra) or {}
            keys += [item["Key"] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = page["NextContinuationToken"]

    # The layout
    def model_key(self, sha256: str) -> str:
        return self.key("models", f"{sha256}.tflite")

    def manifest_key(self, channel: str) -> str:
        return self.key("channels", channel, "manifest.json")

    def history(self, channel: str) -> list[str]:
        return self.list(self.key("channels", channel, "history") + "/")

    def channels(self) -> list[str]:
        return sorted({k.split("/")[-2] for k in self.list(self.key("channels") + "/") if k.endswith("/manifest.json")})
