"""What `spm-gen serve` is started with (light: its fields are the command's options, parsed before fastapi or
torch load), and the bearer token's source."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..utils.dataclass_options import option
from ..utils.validation import check_positive_int, int_option, is_integer

TOKEN_ENV = "SPM_GEN_TOKEN"


@dataclass
class ServeSettings:
    folder: str = option(help="a saved SPMDiffusionPipeline folder (with memory)", flag="folder")
    token: str | None = None  # None: removal and receipts are refused (never an option: see read_token)
    protect_generate: bool = option(False, help="generation needs the token too")
    classifier: str | None = option(None, help="a classifier folder: the judge of removals with verify")
    max_images: int = 256  # per /generate request
    max_upload_bytes: int = option(8 * 2**20, help="uploads per /remove request, in bytes", type=int_option(1))
    max_image_pixels: int = option(
        2**20, help="pixels per uploaded image, read from its header before any decoding", type=int_option(1)
    )
    max_concurrent_generations: int = option(
        2, help="generations run at once; more wait in the queue", type=int_option(1)
    )
    generation_queue: int = option(
        8, help="generations that may wait; beyond, 503 with Retry-After", type=int_option(0)
    )
    max_generations_per_client: int = option(
        4,
        help="generations running or queued from one client address; beyond, 429 with Retry-After (behind a "
        "proxy every client shares its address)",
        type=int_option(1),
    )

    def __post_init__(self) -> None:
        positive = ("max_images", "max_upload_bytes", "max_image_pixels", "max_concurrent_generations")
        for name in (*positive, "max_generations_per_client"):
            check_positive_int(name, getattr(self, name))
        if not is_integer(self.generation_queue) or self.generation_queue < 0:
            raise ValueError(f"generation_queue must be an integer >= 0, got {self.generation_queue!r}")


def read_token(token_file: str | None) -> str | None:
    """The bearer token: the file's first line when `token_file` is given, else `$SPM_GEN_TOKEN`; None if empty."""
    if token_file is not None:
        if not os.path.isfile(token_file):
            raise ValueError(f"--token-file '{token_file}' is not a file")
        with open(token_file, encoding="utf-8") as f:
            token = f.readline().strip()
        if not token:
            raise ValueError(f"--token-file '{token_file}' is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None
