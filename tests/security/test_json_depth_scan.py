"""The middleware's JSON depth check gives the answers of a plain token-by-token scan."""

import random
import re

import pytest

from synapsex_site.middleware import json_depth_exceeds

_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def reference_depth_exceeds(body: bytes, limit: int) -> bool:
    depth = 0
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


@pytest.mark.parametrize("body, limit, exceeds", [
    (b"[[[]]]", 3, False), (b"[[[]]]", 2, True), (b'"[[[["', 1, False),
    (b'{"a": "\\"[[[" }', 1, False), (b'["\\\\"[[', 2, True), (b"", 0, False),
    (b"[]]]][[", 1, False), (b'"unterminated [[[', 2, True), (b"[" * 65, 64, True),
    (b"[" * 64, 64, False),
])
def test_it_counts_brackets_outside_strings(body, limit, exceeds):
    assert json_depth_exceeds(body, limit) is exceeds


def test_it_agrees_with_a_token_scan_on_random_bodies():
    rng = random.Random(16)
    alphabet = b'[]{}"\\ a,:'
    for _ in range(3000):
        body = bytes(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        limit = rng.randrange(5)
        assert json_depth_exceeds(body, limit) is reference_depth_exceeds(body, limit), body
