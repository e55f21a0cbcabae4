"""The wire encoder: orjson's output must mean what the standard library's would."""
from __future__ import annotations

import json

import pytest

from server import jsonenc


@pytest.mark.parametrize("value", [
    {"result": "x" * (1 << 20), "stderr": "é\u2028\x00\"\\", "exit_code": None, "ok": True},
    [{"job_id": 2**63 - 1, "limits": {"timeout_s": 10.0, "cpus": 0.5}}],
    {"big": 2**70},  # beyond orjson's 64 bits: the standard library's fallback
    {"emoji": "\U0001F600", "nested": [[], {}, ""]},
])
def test_same_meaning_as_the_standard_library(value):
    data = jsonenc.dumps(value)
    assert isinstance(data, bytes)
    assert json.loads(data) == value


def test_lone_surrogate_is_refused_not_sent():
    with pytest.raises(UnicodeEncodeError):
        jsonenc.dumps({"input": "\ud800"})
