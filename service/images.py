"""Turning `image_url` parts into PIL images without trusting the sender.

Every limit is checked at the cheapest point: base64 length before decoding, pixel count from
the header before decompressing (decompression bombs), host allowlist before any connection
(SSRF), byte cap while downloading.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from service.errors import BadRequest, PayloadTooLarge

ALLOWED_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP", "gif": "GIF"}
_DATA_URL = re.compile(r"^data:image/(?P<fmt>[a-zA-Z0-9.+-]+);base64,(?P<data>.*)$", re.DOTALL)


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    remote_domains: tuple[str, ...] = ()
    remote_timeout_s: float = 5.0


def load_image(url: str, limits: ImageLimits, param: str) -> Image.Image:
    """Decode a data URL or fetch an allowed remote URL; `param` names the part in errors."""
    if url.startswith("data:"):
        fmt, raw = _decode_data_url(url, limits, param)
    elif url.startswith(("http://", "https://")):
        fmt, raw = None, _fetch(url, limits, param)
    else:
        raise BadRequest(
            "image_url must be a data:image/...;base64 URL or an http(s) URL",
            param=param,
            code="invalid_image_url",
        )
    return _open(raw, fmt, limits, param)


def _decode_data_url(url: str, limits: ImageLimits, param: str) -> tuple[str, bytes]:
    match = _DATA_URL.match(url)
    if not match:
        raise BadRequest(
            "malformed data URL: expected data:image/<format>;base64,<data>",
            param=param,
            code="invalid_image_url",
        )
    fmt = match["fmt"].lower()
    if fmt not in ALLOWED_FORMATS:
        raise BadRequest(
            f"unsupported image type image/{fmt}; allowed: png, jpeg, webp, gif",
            param=param,
            code="unsupported_image_type",
        )
    data = "".join(match["data"].split())
    if len(data) * 3 // 4 > limits.max_bytes:
        raise PayloadTooLarge(
            f"image exceeds {limits.max_bytes} bytes", param=param, code="image_too_large"
        )
    try:
        return fmt, base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(
            "image data is not valid base64", param=param, code="invalid_base64"
        ) from None


def _fetch(url: str, limits: ImageLimits, param: str) -> bytes:
    import httpx

    host = (urlsplit(url).hostname or "").lower()
    if host not in limits.remote_domains:
        raise BadRequest(
            f"remote image URLs are not allowed for host {host!r}; send a data URL or ask the "
            "operator to allow the host (CROSSGUARD_REMOTE_IMAGE_DOMAINS)",
            param=param,
            code="remote_image_refused",
        )
    try:
        with httpx.stream("GET", url, timeout=limits.remote_timeout_s) as response:
            if response.status_code != 200:
                raise BadRequest(
                    f"fetching the image returned HTTP {response.status_code}",
                    param=param,
                    code="image_fetch_failed",
                )
            return _read_capped(response, limits, param)
    except httpx.HTTPError as exc:
        raise BadRequest(
            f"fetching the image failed: {type(exc).__name__}",
            param=param,
            code="image_fetch_failed",
        ) from None


def _read_capped(response, limits: ImageLimits, param: str) -> bytes:
    buf = bytearray()
    for chunk in response.iter_bytes():
        buf.extend(chunk)
        if len(buf) > limits.max_bytes:
            raise PayloadTooLarge(
                f"image exceeds {limits.max_bytes} bytes", param=param, code="image_too_large"
            )
    return bytes(buf)


def _open(raw: bytes, fmt: str | None, limits: ImageLimits, param: str) -> Image.Image:
    if len(raw) > limits.max_bytes:
        raise PayloadTooLarge(
            f"image exceeds {limits.max_bytes} bytes", param=param, code="image_too_large"
        )
    try:
        image = Image.open(io.BytesIO(raw), formats=sorted(set(ALLOWED_FORMATS.values())))
    except Image.DecompressionBombError:
        raise PayloadTooLarge(
            f"image exceeds {limits.max_pixels} pixels", param=param, code="image_too_many_pixels"
        ) from None
    except (UnidentifiedImageError, OSError):
        raise BadRequest(
            "data is not a decodable png, jpeg, webp or gif image",
            param=param,
            code="invalid_image",
        ) from None
    if fmt is not None and image.format != ALLOWED_FORMATS[fmt]:
        raise BadRequest(
            f"declared image/{fmt} but the data is {image.format}",
            param=param,
            code="invalid_image",
        )
    width, height = image.size
    if width * height > limits.max_pixels:
        raise PayloadTooLarge(
            f"image has {width}x{height} pixels; the limit is {limits.max_pixels} pixels",
            param=param,
            code="image_too_many_pixels",
        )
    try:
        image.seek(0)
        return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        raise BadRequest(
            "image data is truncated or corrupt", param=param, code="invalid_image"
        ) from None
