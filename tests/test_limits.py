"""Rate limits, trusted-proxy addresses, display cleaning and frame layout,
without sockets."""

from __future__ import annotations

import pytest

from goflypy.config import ConfigError
from goflypy.display import clean, clean_frame, is_dirty
from goflypy.handlers.sockets import _text_frame
from goflypy.hub import encode
from goflypy.limits import RateLimiter, TokenBucket
from goflypy.proxy import TrustedProxies


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_says_when_to_retry() -> None:
    clock = Clock()
    bucket = TokenBucket(2, 1.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    wait = bucket.take()
    assert 400 < wait <= 501
    clock.now += wait / 1000
    assert bucket.take() == 0


def test_rate_limiter_keeps_keys_apart_and_forgets_full_buckets() -> None:
    clock = Clock()
    limiter = RateLimiter(60, 60, burst=1, clock=clock, max_keys=2)
    assert limiter.check("a") == 0 and limiter.check("a") > 0
    assert limiter.check("b") == 0
    clock.now += 5
    assert limiter.check("c") == 0  # a and b refilled and were dropped
    assert limiter.check("a") == 0


@pytest.mark.parametrize(
    ("remote", "header", "client"),
    [
        ("127.0.0.1", "203.0.113.5", "203.0.113.5"),
        ("127.0.0.1", "203.0.113.5, 10.0.0.2", "203.0.113.5"),  # two proxies
        ("127.0.0.1", "6.6.6.6, 203.0.113.5", "203.0.113.5"),  # forged prefix
        ("198.51.100.1", "203.0.113.5", "198.51.100.1"),  # not a proxy
        ("127.0.0.1", "junk, 203.0.113.5", "203.0.113.5"),
        ("127.0.0.1", "203.0.113.5, junk", "127.0.0.1"),
        ("::1", "2001:db8::7", "2001:db8::7"),
    ],
)
def test_forwarded_for_is_read_from_the_right_within_trusted_proxies(
    remote: str, header: str, client: str
) -> None:
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "::1"])
    assert proxies.client_of(remote, [header]) == client


def test_a_bad_proxy_entry_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="trusted_proxies"):
        TrustedProxies(["10.0.0.0/33"])


def test_clean_strips_controls_and_bidi_but_keeps_lines_and_emoji() -> None:
    assert clean("a\u202eb\u2067c\u200fd\x00e\x1bf\x7fg\x85h") == "abcdefgh"
    assert clean("第一行\n\t第二行 👨‍👩‍👧") == "第一行\n\t第二行 👨‍👩‍👧"
    frame = {"type": "message", "text": "x\u202ey", "meta": [{"q": "\x07z"}], "n": 3}
    assert clean_frame(frame) == {
        "type": "message",
        "text": "xy",
        "meta": [{"q": "z"}],
        "n": 3,
    }


def test_encode_cleans_only_what_needs_it() -> None:
    assert encode({"text": "plain 文本\n"}) == '{"text":"plain 文本\\n"}'
    assert not is_dirty('{"text":"plain 文本\\n"}')
    assert encode({"text": "a\u202eb\x01c"}) == '{"text":"abc"}'
    # A literal backslash-b is text, not a control character.
    assert encode({"text": "C:\\bin"}) == '{"text":"C:\\\\bin"}'


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_joined_frames_carry_their_length_as_rfc_6455_says(size: int) -> None:
    text = "好" * (size // 3) + "x" * (size % 3)
    frame = _text_frame(text)
    assert frame[0] == 0x81  # final text frame
    if size < 126:
        header, length = 2, frame[1]
    elif size < 65536:
        header, length = 4, int.from_bytes(frame[2:4], "big")
        assert frame[1] == 126
    else:
        header, length = 10, int.from_bytes(frame[2:10], "big")
        assert frame[1] == 127
    assert length == size == len(frame) - header
    assert frame[header:].decode() == text
