"""What one request, and one client, can make `spm-gen serve` do: body bytes before they are read, uploaded
image pixels before decoding, and generations at once (in all and per client, then a refusal with
Retry-After), so that removals and /health stay fast whatever a client sends."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import HTTPException, UploadFile
from fastapi.responses import JSONResponse

MAX_JSON_BYTES = 2**20  # a body that is not multipart (json, form fields): 256 labels take under 2 kB
MULTIPART_ENVELOPE = 2**16  # the form fields and part headers of a multipart body beside its uploads
RETRY_AFTER = {"Retry-After": "1"}


def _too_large(limit: int) -> str:
    return f"request body above {limit} bytes (uploads: --max-upload-bytes; other bodies: {MAX_JSON_BYTES})"


class BodyLimit:
    """ASGI middleware: a request body above its limit is refused with 413 before it is read whole, at once
    from its Content-Length, or as soon as a body without one (chunked) passes the limit. Multipart bodies may
    carry `max_upload_bytes` of uploads; every other body `MAX_JSON_BYTES`."""

    def __init__(self, app, max_upload_bytes: int) -> None:
        self.app, self.max_upload_bytes = app, max_upload_bytes

    def limit_for(self, content_type: bytes) -> int:
        if content_type.lower().startswith(b"multipart/"):
            return self.max_upload_bytes + MULTIPART_ENVELOPE
        return MAX_JSON_BYTES

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit = self.limit_for(headers.get(b"content-type", b""))
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            detail = _too_large(limit) if length.isdigit() else f"unreadable Content-Length {length[:40]!r}"
            response = JSONResponse({"error": detail}, status_code=413 if length.isdigit() else 400)
            await response(scope, receive, send)
            return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # raised inside the body's reading: the app answers it as any HTTPException
                raise HTTPException(413, _too_large(limit))
            return message

        await self.app(scope, counted, send)


class GenerationGate:
    """At most `running` generations at once and `waiting` more queued, and at most `per_client` of them
    (running or queued) from one client address; a request beyond is refused at once (503 when the queue is
    full, 429 when its client holds its share; both with Retry-After), so neither a flood of generations nor
    one greedy client holds the threads that removals, /health and the other clients use."""

    def __init__(self, running: int, waiting: int, per_client: int | None = None) -> None:
        self._slots = threading.BoundedSemaphore(running)
        self._limit, self._per_client = running + waiting, per_client
        self._admitted: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def admit(self, client: str = "") -> Iterator[None]:
        with self._lock:
            if self._admitted.total() >= self._limit:
                raise HTTPException(503, "busy: too many generations queued; retry later", RETRY_AFTER)
            if self._per_client is not None and self._admitted[client] >= self._per_client:
                detail = f"this client has {self._per_client} generations running or queued; retry later"
                raise HTTPException(429, detail, RETRY_AFTER)
            self._admitted[client] += 1
        try:
            with self._slots:
                yield
        finally:
            with self._lock:
                self._admitted[client] -= 1
                if not self._admitted[client]:
                    del self._admitted[client]


@dataclass
class UploadBudget:
    """The uploads of one request, written to disk in chunks while their total stays within `max_bytes` (413
    beyond), each image's pixel count read from its header and refused above `max_pixels` before any decoding
    (a decompression bomb is a small file of a huge image)."""

    max_bytes: int
    max_pixels: int
    used: int = 0

    def save(self, uploads: list[UploadFile], folder: str, kind: str) -> list[str]:
        """The uploaded files written into `folder` (their names are the client's: not used for paths)."""
        paths = []
        for i, upload in enumerate(uploads):
            path = os.path.join(folder, f"{kind}-{i}.png")
            with open(path, "wb") as f:
                while chunk := upload.file.read(2**16):
                    self.used += len(chunk)
                    if self.used > self.max_bytes:
                        raise HTTPException(413, f"uploads exceed {self.max_bytes} bytes per request")
                    f.write(chunk)
            self._check_pixels(path, upload.filename or f"{kind} {i}")
            paths.append(path)
        return paths

    def _check_pixels(self, path: str, name: str) -> None:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
        except Image.DecompressionBombError as e:  # PIL's own limit, far above ours, refused the header
            raise HTTPException(413, f"upload {name!r} is above {self.max_pixels} pixels per image ({e})") from None
        except (UnidentifiedImageError, OSError) as e:
            raise HTTPException(400, f"upload {name!r} is not an image this server reads ({e})") from None
        if width * height > self.max_pixels:
            raise HTTPException(413, f"upload {name!r} is {width}x{height} pixels, above {self.max_pixels} per image")
