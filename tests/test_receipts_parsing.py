"""Property tests: the receipt and proof parsers give a verdict or a reason, nothing else.

Whatever bytes a verifier is handed (raw bytes, edited bytes of a real receipt or proof,
structurally edited JSON, statements edited and correctly re-signed, absurd nesting), the
outcome is a result or a VerificationError with a one-line reason: never another
exception, never a hang. The mutations are the ones the fuzz targets in bench/fuzz/ use,
driven here by hypothesis so failures shrink.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearset.errors import VerificationError
from clearset.receipts import load_proof, parse_envelope, parse_json, verify_proof

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "fuzz"))
import receipt_cases as cases  # noqa: E402

HANG_SECONDS = 10
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def _no_hang() -> Iterator[None]:
    """Fail an example that runs for HANG_SECONDS (deadline=None: the machine is shared)."""

    def _hang(signum: int, frame: object) -> None:
        raise AssertionError(f"no verdict within {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class _Drawn:
    """receipt_cases.Choices drawn from hypothesis, so failing inputs shrink."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def raw(self, size: int) -> bytes:
        return self.data.draw(st.binary(min_size=size, max_size=size))


def test_the_samples_are_valid() -> None:
    assert [p["version"] for p in cases.PROOFS] == [2] * 4 + [1] * 4
    assert [cases.check_proof(json.dumps(p).encode()) for p in cases.PROOFS] == ["valid"] * 8
    assert [cases.check_receipt(json.dumps(r).encode()) for r in cases.RECEIPTS] == ["valid"] * 2


@SETTINGS
@given(st.binary(max_size=512))
def test_any_bytes_as_a_proof(data: bytes) -> None:
    with _no_hang():
        assert cases.check_proof(data) == "invalid"


@SETTINGS
@given(st.binary(max_size=512))
def test_any_bytes_as_a_receipt(data: bytes) -> None:
    with _no_hang():
        assert cases.check_receipt(data) == "invalid"


@SETTINGS
@given(st.data())
def test_mutated_proofs(data: st.DataObject) -> None:
    document = cases.proof_input(_Drawn(data))
    with _no_hang():
        cases.check_proof(document)


@SETTINGS
@given(st.data())
def test_mutated_receipts(data: st.DataObject) -> None:
    document = cases.receipt_input(_Drawn(data))
    with _no_hang():
        cases.check_receipt(document)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=16,
)


@SETTINGS
@given(_json, st.sampled_from(sorted(cases.PROOFS[0])))
def test_any_json_in_any_proof_field(value: object, field: str) -> None:
    for sample in cases.PROOFS[:3]:
        text = json.dumps({**sample, field: value}).encode()
        with _no_hang():
            cases.check_proof(text)


@pytest.mark.parametrize("depth", [65, 1_000, 5_000, 200_000])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deep_nesting_is_a_reason_not_a_recursion_error(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    text = (opener * depth + "1" + closer * depth).encode()
    for parse in (load_proof, parse_envelope, lambda d: parse_json(d, "x")):
        with pytest.raises(VerificationError, match="nested|not JSON"):
            parse(text)
    assert cases.check_proof(text) == cases.check_receipt(text) == "invalid"


def test_a_proof_version_is_exactly_the_integer_one_or_two() -> None:
    for proof in (cases.PROOFS[0], cases.PROOFS[4]):  # version 2, version 1
        verify_proof(proof, cases.NEW_STATEMENT)
        for version in (1.0, 2.0, True, "1", "2", 0, 3, None):
            with pytest.raises(VerificationError, match="version"):
                verify_proof({**proof, "version": version}, cases.NEW_STATEMENT)
        assert cases.check_proof(json.dumps({**proof, "version": 1.0}).encode()) == "invalid"
    # The two versions spell paths differently: relabelled, each is refused with a reason.
    v2, v1 = cases.PROOFS[0], cases.PROOFS[4]
    with pytest.raises(VerificationError, match="not a list"):
        verify_proof({**v2, "version": 1}, cases.NEW_STATEMENT)
    with pytest.raises(VerificationError, match="not a base64 string"):
        verify_proof({**v1, "version": 2}, cases.NEW_STATEMENT)


@pytest.mark.parametrize(
    "text",
    ['{"a": NaN}', '{"a": Infinity}', '{"a": 1, "a": 2}', '{"a": "\\ud800"}', "1" * 5000,
     b"\xff".decode("latin-1")],
)  # fmt: skip
def test_strict_json_refuses_what_other_parsers_read_differently(text: str) -> None:
    with pytest.raises(VerificationError, match="^x is not"):
        parse_json(text.encode("latin-1") if text == "\xff" else text.encode(), "x")
