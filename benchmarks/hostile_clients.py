"""The hostile mix of `serve_load.py`: requests that try to make `spm-gen serve` do more than it should, each
with the answers it may get. Used by the benchmark only (loopback, bounded by its run's time)."""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

# what each hostile request may be answered; "closed": the server closed the connection on a body it refused
# before the client finished sending it (the refusal was not read)
HOSTILE_EXPECTED = {
    "oversized upload": {413, "closed"},
    "oversized upload, wrong token": {401, 413, "closed"},
    "batch of 100,000 labels": {400, 422},
    "json body above 1 MiB": {413, "closed"},
    "bomb 8192^2": {413},
    "bomb 16384^2": {413},
    "wrong token": {401},
    "no token, receipts": {401},
    "flood": {200, 429, 503},
}
FLOOD_ADDRESS = "127.0.0.200"
OTHER_ADDRESS = "127.0.0.201"
UPLOAD_LIMIT = 2**20  # the hostile part's server runs with --max-upload-bytes of this


def png_bomb(side: int) -> bytes:
    """A valid grayscale PNG of side x side zero pixels: a few hundred kB that decode to side^2 bytes
    (compressed row by row: never whole in memory here)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), bytes(side + 1)  # filter byte 0, then the row
    data = b"".join([*(compressor.compress(row) for _ in range(side)), compressor.flush()])
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@dataclass
class HostileMix:
    """The hostile requests through `connect` (an HTTP client of the server from a loopback address), their
    answers counted by kind."""

    connect: Callable[[str], httpx.Client]
    token: str
    answers: dict[str, Counter] = field(default_factory=lambda: {kind: Counter() for kind in HOSTILE_EXPECTED})
    unexpected: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bombs = {side: png_bomb(side) for side in (8192, 16384)}
        self._lock = threading.Lock()

    def threads(self, stop: threading.Event, flood: int) -> list[threading.Thread]:
        """`flood` threads generating without pause from one address, and one cycling through the rest."""
        flooders = [threading.Thread(target=self._flood, args=(stop,)) for _ in range(flood)]
        return [*flooders, threading.Thread(target=self._cycle, args=(stop,))]

    def _send(self, kind: str, request: Callable[[httpx.Client], httpx.Response], http: httpx.Client) -> int | str:
        try:
            answer: int | str = request(http).status_code
        except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError) as e:
            answer, error = "closed", e
        else:
            error = None
        with self._lock:
            self.answers[kind][answer] += 1
            if answer not in HOSTILE_EXPECTED[kind]:
                self.unexpected.append(f"{kind}: {answer}{f' ({error!r})' if error else ''}")
        return answer

    def _flood(self, stop: threading.Event) -> None:
        http, body = self.connect(FLOOD_ADDRESS), {"class_labels": [3] * 4, "num_inference_steps": 5}
        while not stop.is_set():
            self._send("flood", lambda h: h.post("/generate", json=body), http)

    def _cycle(self, stop: threading.Event) -> None:
        auth, wrong = {"Authorization": f"Bearer {self.token}"}, {"Authorization": "Bearer not-the-token"}
        oversized = {"images": ("big.png", os.urandom(4 * UPLOAD_LIMIT))}
        requests = {
            "oversized upload": lambda h: h.post("/remove", headers=auth, files=oversized),
            "oversized upload, wrong token": lambda h: h.post("/remove", headers=wrong, files=oversized),
            "batch of 100,000 labels": lambda h: h.post("/generate", json={"class_labels": [1] * 100_000}),
            "json body above 1 MiB": lambda h: h.post("/generate", json={"class_labels": [1] * 2**20}),
            "bomb 8192^2": lambda h: self._bomb(h, auth, 8192),
            "bomb 16384^2": lambda h: self._bomb(h, auth, 16384),
            "wrong token": lambda h: h.post("/remove", headers=wrong, json={"ids": ["0"]}),
            "no token, receipts": lambda h: h.get("/receipts"),
        }
        http = self.connect(OTHER_ADDRESS)
        while not stop.is_set():
            for kind, request in requests.items():
                if stop.wait(0.05):
                    return
                if self._send(kind, request, http) == "closed":
                    http = self.connect(OTHER_ADDRESS)  # a fresh connection after a closed one

    def _bomb(self, http: httpx.Client, auth: dict, side: int) -> httpx.Response:
        files = {"similar_to": ("bomb.png", self.bombs[side])}
        return http.post("/remove", headers=auth, files=files, data={"threshold": "0.1"})

    def summary(self) -> dict:
        return {
            "answers": {kind: {str(k): v for k, v in counts.items()} for kind, counts in self.answers.items()},
            "requests": sum(sum(counts.values()) for counts in self.answers.values()),
            "unexpected": len(self.unexpected),
            "unexpected_examples": self.unexpected[:5],
        }
