"""The body of a prediction request, read within limits: one uploaded image (multipart) or a
test-set index (JSON), and the upload converted by the one conversion convkit has
(convkit.data.images.load_image), as `convkit predict` converts files.

The body is counted as it arrives: a Content-Length over the limit is refused before reading,
and a body that turns out longer than it said (or sent in chunks without a length) is refused
when the count passes the limit. A refused body that is not much over the limit is still read
and thrown away, so a browser gets the 413 answer instead of a reset connection.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message, Receive

from convkit.data.images import conversion_options, load_image
from convkit.errors import ConvkitError
from convkit.serve.errors import ApiError

MAX_UPLOAD = 10 * 1024 * 1024  # bytes of one uploaded image
MULTIPART_OVERHEAD = 64 * 1024  # the multipart framing and small fields around the file
MAX_JSON = 64 * 1024  # a JSON body ({"test_index": N} is a few bytes)
DRAIN_FACTOR = 3  # a refused body up to this many times the limit is read to its end

USAGE = (
    'send multipart/form-data with one file field "image", or JSON {"test_index": N} '
    "with Content-Type: application/json"
)


class BodyTooLarge(Exception):
    """Raised from inside the body's receive channel when the count passes the limit."""


class LimitedBody:
    """A request's receive channel that counts the body's bytes and stops past `limit`."""

    def __init__(self, receive: Receive, limit: int):
        self._receive, self.limit = receive, limit
        self.received, self.more = 0, True

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.more = message.get("more_body", False)
            if self.received > self.limit:
                raise BodyTooLarge
        else:  # http.disconnect
            self.more = False
        return message

    async def drain(self, cap: int) -> None:
        """Read (and drop) what is left of the body, as long as it stays under `cap` bytes."""
        while self.more and self.received <= cap:
            message = await self._receive()
            self.received += len(message.get("body", b""))
            self.more = message["type"] == "http.request" and message.get("more_body", False)


@dataclass(frozen=True)
class PredictSource:
    """What to predict: an uploaded file's bytes and name, or a test-set index."""

    data: bytes | None = None
    filename: str = ""
    test_index: int | None = None


async def read_predict_body(request: Request, max_upload: int = MAX_UPLOAD) -> PredictSource:
    """The upload or test index a prediction request sends; ApiError when it is malformed
    (400) or too large (413)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        limit = max_upload + MULTIPART_OVERHEAD
        too_large = ApiError(413, f"the upload is over the limit of {_size(max_upload)}")
    elif kind == "application/json":
        limit = MAX_JSON
        too_large = ApiError(413, f"the JSON body is over the limit of {_size(MAX_JSON)}")
    else:
        raise ApiError(400, f"unexpected body ({kind or 'no Content-Type'}): {USAGE}")
    try:
        declared = int(request.headers.get("content-length", "0"))
    except ValueError:
        raise ApiError(400, "the Content-Length header is not a number") from None
    body = LimitedBody(request.receive, limit)
    try:
        if declared > limit:
            raise BodyTooLarge
        limited = Request(request.scope, body.receive)
        if kind == "application/json":
            return _json_source(await limited.body())
        return await _multipart_source(limited, max_upload, too_large)
    except BodyTooLarge:
        raise too_large from None
    finally:  # refused before its end (too large, malformed): read the rest, within reason
        if body.more and declared <= DRAIN_FACTOR * limit:
            await body.drain(DRAIN_FACTOR * limit)


def _json_source(raw: bytes) -> PredictSource:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, f"the body is not valid JSON; {USAGE}") from None
    index = value.get("test_index") if isinstance(value, dict) else None
    if not isinstance(index, int) or isinstance(index, bool):
        raise ApiError(
            400, f'expected JSON {{"test_index": N}} with an integer N, received {raw[:80]!r}'
        )
    return PredictSource(test_index=index)


async def _multipart_source(
    request: Request, max_upload: int, too_large: ApiError
) -> PredictSource:
    # One file; a few small fields are tolerated (and ignored); fields over 64 KB are refused.
    form = await request.form(max_files=1, max_fields=8, max_part_size=MULTIPART_OVERHEAD)
    try:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            sent = [k for k, v in form.multi_items() if isinstance(v, UploadFile)]
            what = f"a file in field {sent[0]!r}" if sent else "no file"
            raise ApiError(400, f'expected one file in the field "image", received {what}')
        if upload.size is not None and upload.size > max_upload:
            raise too_large
        data = await upload.read(max_upload + 1)
        if len(data) > max_upload:
            raise too_large
        return PredictSource(data=data, filename=_safe_name(upload.filename))
    finally:
        await form.close()


def _safe_name(name: str | None) -> str:
    """The upload's file name as it may appear in a message: its last part, printable, short."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable())[:80]
    return base or "the upload"


def _size(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n / 2**10:g} KB"


def convert_upload(
    source: PredictSource,
    image_shape: tuple[int, int, int],
    dataset: str,
    fit: str,
    max_pixels: int,
) -> dict[str, Any]:
    """The uploaded image converted for a run (load_image, which takes a path: the bytes go
    through a temporary file). Its errors become 413 (too many pixels: refused from the
    header, before decoding), 415 (not an image, or a damaged one) or 400, naming the file."""
    fd, tmp = tempfile.mkstemp(prefix="convkit-upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(source.data or b"")
        options = conversion_options(dataset, image_shape, fit)
        return load_image(tmp, image_shape, max_pixels=max_pixels, **options)
    except ConvkitError as exc:
        message = str(exc).replace(tmp, source.filename)
        raise ApiError(_status_of(message), message) from None
    finally:
        os.unlink(tmp)


def _status_of(message: str) -> int:
    """load_image's refusals by what they say (its messages are tested in tests/test_images.py
    and, for these statuses, in tests/test_serve_api.py)."""
    if "decompression bomb" in message:
        return 413
    if "is not an image convkit reads" in message or "is a damaged image file" in message:
        return 415
    return 400
