"""`spm-gen serve`: a saved SPM as an HTTP service whose removals take effect for every request after them.

Endpoints (OpenAPI docs at /docs):

- `POST /generate` (json): class labels, seed, steps, guidance, memory size; returns base64 PNGs (or, with
  `"format": "png"`, one PNG grid) and the memory ids each sample read.
- `POST /remove` (form): ids, a class, uploaded images matched by content hash, or similar-to uploads with a
  threshold; reason, dry run, verify. The same removal as `spm-gen remove` (lock, atomic commit, receipt
  file), then the live bank; returns the receipt.
- `GET /receipts`, `GET /receipts/{name}`: the folder's receipt files.
- `GET /health`: bank version, item count, model, uptime.

Removal and receipts need `Authorization: Bearer <token>` (the token from the environment variable
`SPM_GEN_TOKEN` or a file, never the command line); without a configured token they are refused.
Generation is open unless `protect_generate`. Bad input is a 4xx with one line naming the value. What one
request or client can ask is bounded (`limits.py`): body bytes, upload pixels, generations at once.
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import logging
import os
import tempfile
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from ..memory.deletion import DeletionRequest
from ..utils.images import grid_image
from .limits import BodyLimit, GenerationGate, UploadBudget
from .served_model import ServedModel
from .settings import TOKEN_ENV, ServeSettings

logger = logging.getLogger(__name__)


class GenerateRequest(BaseModel):
    class_labels: list[int] = Field(min_length=1, description="the class of each sample")
    seed: int = Field(0, ge=0, description="generator seed (noise and memory retrieval)")
    num_inference_steps: int = Field(50, ge=1, le=1000)
    guidance_scale: float | None = Field(None, description="w; the pipeline's default when absent")
    memory_size: int | None = Field(None, ge=1, description="memory items read per class (all when absent)")
    format: Literal["json", "png"] = "json"


class RemoveRequest(BaseModel):
    """The json body of `POST /remove` (uploads go as multipart form fields instead)."""

    model_config = {"extra": "forbid", "populate_by_name": True}
    ids: list[str] = Field(default_factory=list)
    label: int | None = Field(None, alias="class", ge=0)
    reason: str = ""
    dry_run: bool = False
    verify: bool = False
    verify_samples: int = Field(64, ge=1)


EXPECTED_BODY = (
    'POST /remove expects json ({"ids": [...], "class": 3, "reason": "...", "dry_run": false, "verify": false}) '
    "or form fields (ids, class, images, similar_to, threshold, reason, dry_run, verify, verify_samples)"
)


async def json_removal(request: Request) -> RemoveRequest | None:
    """The removal a json body asks for; None for a form body. A body of another type, or json that is not
    a removal, is refused saying what is expected."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return None
    body = await request.body()
    if kind != "application/json":
        if not body:
            return None  # no body at all: the form path says there is nothing to remove
        raise HTTPException(415, f"unreadable body of type {kind or 'none'!r}: {EXPECTED_BODY}")
    try:
        return RemoveRequest.model_validate_json(body)
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        first = getattr(e, "errors", lambda: [{}])()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise HTTPException(422, f"{where}: {first.get('msg', 'invalid json')}; {EXPECTED_BODY}") from None


def create_app(settings: ServeSettings, model: ServedModel | None = None) -> FastAPI:
    """The FastAPI app serving `settings.folder` (`model`: an already loaded one)."""
    served = model if model is not None else ServedModel(settings.folder)
    judge = None
    if settings.classifier:
        from ..models.classifier_spm import load_classifier

        judge = load_classifier(settings.classifier)[0]
    app = FastAPI(title="spm-gen", description=__doc__.split("\n\n")[0], version="0.1.0")
    app.state.served = served
    app.add_middleware(BodyLimit, max_upload_bytes=settings.max_upload_bytes)
    gate = GenerationGate(
        settings.max_concurrent_generations, settings.generation_queue, settings.max_generations_per_client
    )

    def authorized(request: Request) -> None:
        if settings.token is None:
            raise HTTPException(403, f"removal and receipts are disabled: no token configured (set {TOKEN_ENV})")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer <token>)")

    def generation_allowed(request: Request) -> None:
        if settings.protect_generate:
            authorized(request)

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query"))
        given = f", got {first['input']!r}" if "input" in first and first["input"] is not None else ""
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}{given}"}, status_code=422)

    @app.exception_handler(HTTPException)
    async def one_line_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(FileNotFoundError)
    async def not_found(request: Request, exc: FileNotFoundError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.get("/health")
    def health() -> dict:
        served.refresh()
        return served.health()

    @app.post("/generate", dependencies=[Depends(generation_allowed)])
    def generate(body: GenerateRequest, request: Request):
        if len(body.class_labels) > settings.max_images:
            count = len(body.class_labels)
            raise ValueError(f"class_labels: at most {settings.max_images} samples per request, got {count}")
        import torch

        with gate.admit(request.client.host if request.client else ""):
            out = served.generate(
                class_labels=body.class_labels,
                num_inference_steps=body.num_inference_steps,
                guidance_scale=body.guidance_scale,
                memory_size=body.memory_size,
                generator=torch.Generator(served.pipe.unet.device).manual_seed(body.seed),
            )
        if body.format == "png":
            headers = {"X-Memory-Ids": json.dumps(out.memory_ids), "X-Bank-Version": str(out.bank_version)}
            return Response(_png(grid_image(out.images)), media_type="image/png", headers=headers)
        images = [base64.b64encode(_png(grid_image(image[None], padding=0))).decode("ascii") for image in out.images]
        return {"images": images, "memory_ids": out.memory_ids, "bank_version": out.bank_version}

    @app.post("/remove", dependencies=[Depends(authorized)])
    def remove(
        ids: Annotated[list[str] | None, Form()] = None,
        label: Annotated[int | None, Form(alias="class")] = None,
        images: Annotated[list[UploadFile] | None, File()] = None,
        similar_to: Annotated[list[UploadFile] | None, File()] = None,
        threshold: Annotated[float | None, Form()] = None,
        reason: Annotated[str, Form()] = "",
        dry_run: Annotated[bool, Form()] = False,
        verify: Annotated[bool, Form()] = False,
        verify_samples: Annotated[int, Form(ge=1)] = 64,
        body: Annotated[RemoveRequest | None, Depends(json_removal)] = None,
    ) -> dict:
        if body is not None:
            ids, label, reason, dry_run = body.ids, body.label, body.reason, body.dry_run
            verify, verify_samples = body.verify, body.verify_samples
        with tempfile.TemporaryDirectory() as uploads:
            budget = UploadBudget(settings.max_upload_bytes, settings.max_image_pixels)
            request = DeletionRequest(
                ids=ids or [],
                labels=[] if label is None else [label],
                image_files=budget.save(images or [], uploads, "image"),
                similar_files=budget.save(similar_to or [], uploads, "similar"),
                threshold=threshold,
                reason=reason,
            )
            outcome = served.remove(request, dry_run=dry_run, keep_images=verify)
        if dry_run:
            return {"dry_run": True, "would_remove": outcome.ids, "labels": outcome.labels}
        result = {"receipt": outcome.receipt.to_dict(), "receipt_file": _name(outcome.receipt_path)}
        result["bank_version"] = served.disk_version
        if verify:
            result["verification"] = served.verify(outcome, verify_samples, judge)
        return result

    @app.get("/receipts", dependencies=[Depends(authorized)])
    def receipts() -> list[dict]:
        folder = served.folder.receipt_dir
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json")) if os.path.isdir(folder) else []
        return [{"name": n.removesuffix(".json"), **_summary(os.path.join(folder, n))} for n in names]

    @app.get("/receipts/{name}", dependencies=[Depends(authorized)])
    def receipt(name: str) -> dict:
        path = os.path.join(served.folder.receipt_dir, f"{name}.json")
        if os.path.basename(name) != name or name.startswith(".") or not os.path.isfile(path):
            raise HTTPException(404, f"no receipt named {name!r} (GET /receipts lists them)")
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    return app


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _name(path: str | None) -> str | None:
    return None if path is None else os.path.basename(path).removesuffix(".json")


def _summary(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    keys = ("removed_ids", "labels", "time_utc", "reason", "version_after")
    return {key: data.get(key) for key in keys} | {"verified": data.get("verification", {}).get("verified")}
