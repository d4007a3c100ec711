import base64
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from service.errors import BadRequest, PayloadTooLarge
from service.images import ImageLimits, load_image

LIMITS = ImageLimits(max_bytes=200_000, max_pixels=1000 * 1000)


def encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def data_url(raw: bytes, mime: str = "png") -> str:
    return f"data:image/{mime};base64,{base64.b64encode(raw).decode()}"


@pytest.mark.parametrize("fmt,mime", [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp"),
                                      ("GIF", "gif")])
def test_each_allowed_format_decodes_to_rgb(fmt, mime):
    image = load_image(data_url(encode(Image.new("RGB", (40, 30), "red"), fmt), mime), LIMITS, "p")
    assert image.mode == "RGB" and image.size == (40, 30)


def test_bad_base64_names_the_part():
    with pytest.raises(BadRequest) as err:
        load_image("data:image/png;base64,@@@notbase64", LIMITS, "messages[0].content[1]")
    assert err.value.code == "invalid_base64" and err.value.param == "messages[0].content[1]"


def test_non_image_bytes_are_refused():
    with pytest.raises(BadRequest, match="not a decodable"):
        load_image(data_url(b"hello, I am plain text"), LIMITS, "p")


def test_truncated_png_is_refused():
    raw = encode(Image.effect_noise((200, 200), 50).convert("RGB"), "PNG")
    with pytest.raises(BadRequest, match="truncated or corrupt"):
        load_image(data_url(raw[: len(raw) // 2]), LIMITS, "p")


def test_declared_type_must_match_data():
    raw = encode(Image.new("RGB", (8, 8)), "JPEG")
    with pytest.raises(BadRequest, match="declared image/png but the data is JPEG"):
        load_image(data_url(raw, "png"), LIMITS, "p")


def test_unsupported_mime_type():
    with pytest.raises(BadRequest, match="unsupported image type image/svg"):
        load_image("data:image/svg+xml;base64,PHN2Zz4=", LIMITS, "p")


@pytest.mark.parametrize("side,message", [
    (5_000, "5000x5000 pixels; the limit is 1000000"),
    (20_000, "exceeds 1000000 pixels"),  # past Pillow's own bomb threshold
])
def test_decompression_bomb_is_refused_before_decoding(side, message):
    bomb = encode(Image.new("1", (side, side)), "PNG")
    assert len(bomb) < LIMITS.max_bytes
    with pytest.raises(PayloadTooLarge, match=message):
        load_image(data_url(bomb), LIMITS, "p")


def test_oversized_bytes_are_refused_before_decoding():
    with pytest.raises(PayloadTooLarge, match="exceeds 200000 bytes"):
        load_image(data_url(b"\0" * 300_000), LIMITS, "p")


def test_remote_urls_refused_without_allowlist():
    with pytest.raises(BadRequest, match="not allowed for host 'example.com'"):
        load_image("https://example.com/cat.png", LIMITS, "p")


def test_other_schemes_refused():
    with pytest.raises(BadRequest, match="data:image"):
        load_image("file:///etc/passwd", LIMITS, "p")


@pytest.fixture()
def image_server():
    """A loopback HTTP server serving a small PNG at /ok and a large body at /big."""
    png = encode(Image.new("RGB", (16, 16), "blue"), "PNG")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/ok": png, "/big": b"\0" * 500_000}.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_remote_url_fetched_from_allowed_host(image_server):
    limits = ImageLimits(200_000, 1_000_000, remote_domains=("127.0.0.1",))
    assert load_image(f"{image_server}/ok", limits, "p").size == (16, 16)
    with pytest.raises(PayloadTooLarge):
        load_image(f"{image_server}/big", limits, "p")
    with pytest.raises(BadRequest, match="HTTP 404"):
        load_image(f"{image_server}/missing", limits, "p")
