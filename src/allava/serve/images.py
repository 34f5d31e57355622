"""Image URLs of a chat request -> RGB images, within the server's limits.

``data:`` URLs are always accepted; ``file://`` only below ``--image-root`` (symlinks resolved, so
``..`` or a link cannot leave it); ``http(s)://`` only with ``--allow-remote-images``, fetched with
a time limit and read no further than the byte limit. The pixel limit is checked from the header,
before any pixel is decoded (a decompression bomb costs nothing).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import urllib.parse
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from allava.serve.config import ServeConfig
from allava.serve.errors import APIError, bad


def _too_big(param: str, what: str, n: int, limit: int, flag: str) -> APIError:
    return APIError(413, f"{param}: {what} {n:,} is over this server's limit of {limit:,} ({flag})", param=param)


def decode(data: bytes, param: str, cfg: ServeConfig) -> Image.Image:
    if len(data) > cfg.max_image_bytes:
        raise _too_big(param, "image bytes", len(data), cfg.max_image_bytes, "--max-image-bytes")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > cfg.max_image_pixels:
                raise _too_big(param, f"image pixels ({w}x{h})", w * h, cfg.max_image_pixels, "--max-image-pixels")
            return im.convert("RGB")
    except APIError:
        raise
    except Image.DecompressionBombError:  # PIL's own guard fired first (far over any sane limit)
        raise APIError(413, f"{param}: the image's pixel count is over this server's limit of "
                            f"{cfg.max_image_pixels:,} (--max-image-pixels)", param=param) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise bad(param, f"not a decodable image ({type(e).__name__}: {str(e)[:120]})") from None


def _data_url(url: str, param: str) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:"):
        raise bad(param, "a data: URL needs the form data:image/<type>;base64,<data>")
    if not head.endswith(";base64"):
        raise bad(param, "only base64 data: URLs are accepted (data:image/<type>;base64,...)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad(param, "the data: URL is not valid base64") from None


def _file_url(url: str, param: str, cfg: ServeConfig) -> bytes:
    if cfg.image_root is None:
        raise bad(param, "file:// URLs are refused: this server was started without --image-root")
    path = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    full = (path if path.is_absolute() else cfg.image_root / path).resolve()
    if not full.is_relative_to(cfg.image_root):
        raise bad(param, f"{path} is outside --image-root")
    if full.is_file() and full.stat().st_size > cfg.max_image_bytes:
        raise _too_big(param, "image bytes", full.stat().st_size, cfg.max_image_bytes, "--max-image-bytes")
    try:
        return full.read_bytes()
    except OSError:
        raise bad(param, f"{path}: no such file under --image-root") from None


async def _remote(url: str, param: str, cfg: ServeConfig) -> bytes:
    if not cfg.allow_remote_images:
        raise bad(param, "remote image URLs are refused: send the image as a base64 data: URL "
                         "(or start the server with --allow-remote-images)")
    import httpx

    buf = bytearray()
    try:
        async with httpx.AsyncClient(timeout=cfg.remote_timeout_s, follow_redirects=True) as client:
            async with client.stream("GET", url) as r:
                if r.status_code != 200:
                    raise bad(param, f"fetching the image answered HTTP {r.status_code}")
                async for chunk in r.aiter_bytes():
                    buf += chunk
                    if len(buf) > cfg.max_image_bytes:
                        raise APIError(413, f"{param}: the image is over this server's limit of "
                                            f"{cfg.max_image_bytes:,} bytes (--max-image-bytes)", param=param)
    except httpx.TimeoutException:
        raise bad(param, f"fetching the image took longer than {cfg.remote_timeout_s:g}s") from None
    except httpx.HTTPError as e:
        raise bad(param, f"could not fetch the image ({type(e).__name__})") from None
    return bytes(buf)


async def load_image(url: object, param: str, cfg: ServeConfig) -> Image.Image:
    """The image an ``image_url.url`` names, or an APIError naming `param`."""
    if not isinstance(url, str) or not url:
        raise bad(param, "expected a URL string")
    scheme = url.split(":", 1)[0].lower()
    if scheme == "data":
        data = _data_url(url, param)
    elif scheme == "file":
        data = _file_url(url, param, cfg)
    elif scheme in ("http", "https"):
        data = await _remote(url, param, cfg)
    else:
        raise bad(param, f"unsupported URL scheme {scheme!r} (data:, file:// under --image-root, http(s))")
    return await asyncio.to_thread(decode, data, param, cfg)  # big images: off the event loop
