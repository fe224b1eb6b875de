"""What the receipt and proof fuzz targets feed and check: samples, mutations, oracles.

The samples are a real signed receipt pair (old and new version, one key) with an
inclusion, a non-inclusion and a removed proof, each in proof version 2 and version 1.
The oracles run the parsers exactly as `clearset verify` does; the one outcome besides a
result that is allowed is clearset's VerificationError with a one-line, non-empty reason.
Any other exception, or a reason that spans lines, is a bug and propagates (atheris
records it as a crash).

Mutations are chosen by a ``Choices`` object so that atheris (FuzzedDataProvider) and the
plain random fallback drive the same code.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from clearset.errors import VerificationError  # noqa: E402 - after the path tweak
from clearset.receipts import (  # noqa: E402
    PAYLOAD_TYPE,
    MerkleTree,
    build_statement,
    load_proof,
    pae,
    parse_envelope,
    prove,
    prove_removed,
    sign_statement,
    statement_digest,
    tree_of,
    verify_envelope,
    verify_proof,
    verify_removed,
)


class Choices(Protocol):
    def integer(self, low: int, high: int) -> int: ...
    def raw(self, size: int) -> bytes: ...


class RandomChoices:
    """Choices from a seeded ``random.Random`` (the fallback when atheris is absent)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def raw(self, size: int) -> bytes:
        return self.rng.randbytes(size)


def _leaves(count: int, seed: int) -> np.ndarray:
    values = sorted(hashlib.sha256(b"item %d %d" % (seed, i)).digest() for i in range(count))
    return np.frombuffer(b"".join(values), np.uint8).reshape(count, 32)


def _statement(tree: MerkleTree, name: str) -> dict[str, Any]:
    return build_statement(
        dataset_name=name,
        tree_size=tree.size,
        root=tree.root,
        source_name="shards",
        manifest_digest="ab" * 32,
        lists=[
            {"name": "l", "version": "1", "digest": "cd" * 32, "hash_type": "pdq", "threshold": 31}
        ],
        scan_started="2024-05-01T10:00:00Z",
        scan_finished="2024-05-01T11:00:00Z",
        removed_count=1,
        removed_commitment="ef" * 32,
        clean={"destination": "cleaned", "finished": "2024-05-01T12:00:00Z",
               "manifest_digest": "12" * 32},
    )  # fmt: skip


KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"clearset fuzz key").digest())
PUBLIC_KEY = KEY.public_key()
OLD_TREE = MerkleTree.build(_leaves(13, 0))
_keep = np.ones(13, bool)
_keep[[0, 6]] = False
NEW_TREE = MerkleTree.build(OLD_TREE.leaves[_keep])
OLD_STATEMENT = _statement(OLD_TREE, "v1")
NEW_STATEMENT = _statement(NEW_TREE, "v2")
OLD_ENVELOPE = sign_statement(OLD_STATEMENT, KEY)
NEW_ENVELOPE = sign_statement(NEW_STATEMENT, KEY)
_new_digest = statement_digest(NEW_STATEMENT)
_old_digest = statement_digest(OLD_STATEMENT)
# Version 2 (what prove writes: base64 paths, a shared top) and version 1 (still read).
PROOFS = [
    proof
    for version in (2, 1)
    for proof in (
        prove(NEW_TREE, NEW_TREE.leaf(3), _new_digest, version=version),
        prove(NEW_TREE, OLD_TREE.leaf(6), _new_digest, version=version),  # a gap
        prove(NEW_TREE, b"\x00" * 32, _new_digest, version=version),  # below the first leaf
        prove_removed(
            OLD_TREE, NEW_TREE, OLD_TREE.leaf(0), _old_digest, _new_digest, version=version
        ),
    )
]
RECEIPTS = [OLD_ENVELOPE, NEW_ENVELOPE]


def _allowed(error: VerificationError) -> None:
    message = str(error)
    if not message or "\n" in message or "\r" in message:
        raise AssertionError(f"a reason must be one non-empty line: {message!r}")


def check_proof(data: bytes) -> str:
    """Parse and verify proof bytes against the sample receipts; 'valid' or 'invalid'."""
    try:
        proof = load_proof(data)
        if proof.get("type") == "removed":
            verify_removed(proof, OLD_STATEMENT, NEW_STATEMENT)
        else:
            verify_proof(proof, NEW_STATEMENT)
    except VerificationError as error:
        _allowed(error)
        return "invalid"
    return "valid"


def check_receipt(data: bytes) -> str:
    """Parse and verify receipt bytes with the sample key, then use what it signs."""
    try:
        statement = verify_envelope(parse_envelope(data), PUBLIC_KEY)
        predicate = statement["predicate"]
        # what `clearset verify` prints from a valid receipt must be there
        f"{predicate['tree']['size']:,} {predicate['source']['name']} {predicate.get('clean')}"
        statement_digest(statement)  # what a proof names it by
        tree_of(statement)
    except VerificationError as error:
        _allowed(error)
        return "invalid"
    return "valid"


# --- mutations ---------------------------------------------------------------------

_ATOMS: list[Any] = [None, True, False, 0, 1, -1, 1.0, 0.5, 2**63, -(2**64), "", "x", [], {},
                     "inclusion", "non-inclusion", "removed", "00" * 32, "ff" * 32, "\ud800",
                     PAYLOAD_TYPE]  # fmt: skip


def random_json(choices: Choices, depth: int = 0) -> Any:
    kind = choices.integer(0, 9 if depth < 4 else 6)
    if kind <= 2:
        return _ATOMS[choices.integer(0, len(_ATOMS) - 1)]
    if kind == 3:
        return choices.integer(-(2**70), 2**70)
    if kind == 4:
        return choices.raw(choices.integer(0, 12)).decode("latin-1")
    if kind == 5:
        return [float("nan"), float("inf"), 1e308, -0.0][choices.integer(0, 3)]
    if kind == 6:
        return "0" * choices.integer(0, 5000) + "1"  # long digit strings (ints below)
    if kind == 7:
        return [random_json(choices, depth + 1) for _ in range(choices.integer(0, 3))]
    return {str(choices.integer(0, 5)): random_json(choices, depth + 1) for _ in range(3)}


def _containers(value: Any, path: tuple = ()) -> list[tuple]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _containers(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _containers(item, (*path, index))
    return found


def _get(value: Any, path: tuple) -> Any:
    for step in path:
        value = value[step]
    return value


_DEEP = "\x00deep\x00"


def mutate_json(value: Any, choices: Choices) -> Any:
    """One structural edit somewhere in ``value``: replace, drop, add, retype or nest."""
    value = copy.deepcopy(value)
    paths = _containers(value)
    path = paths[choices.integer(0, len(paths) - 1)]
    op = choices.integer(0, 6)
    if not path:
        return random_json(choices) if op < 3 else [value] if op < 5 else {"x": value}
    parent, step = _get(value, path[:-1]), path[-1]
    if op <= 1:
        parent[step] = random_json(choices)
    elif op == 2:
        del parent[step]
    elif op == 3 and isinstance(parent, dict):
        parent["extra"] = random_json(choices)
    elif op == 3:
        parent.insert(step, random_json(choices))
    elif op == 4:
        parent[step] = [parent[step]] if choices.integer(0, 1) else {"v": parent[step]}
    elif op == 5:
        parent[step] = _DEEP  # replaced by deep nesting when serialised
    else:
        current = parent[step]
        if isinstance(current, int) and not isinstance(current, bool):
            parent[step] = [float(current), current + 2**64, -current, str(current)][
                choices.integer(0, 3)
            ]
        elif isinstance(current, str):
            parent[step] = current.upper() if choices.integer(0, 1) else current[:-1]
        else:
            parent[step] = random_json(choices)
    return value


def to_bytes(value: Any, choices: Choices) -> bytes:
    """Serialise as a careless or hostile writer might: NaN kept, surrogates passed."""
    text = json.dumps(value, allow_nan=True, ensure_ascii=bool(choices.integer(0, 1)))
    if _DEEP in text:
        depth = choices.integer(1, 5000)
        text = text.replace(json.dumps(_DEEP), "[" * depth + "1" + "]" * depth, 1)
    return text.encode("utf-8", "surrogatepass")


def mutate_bytes(data: bytes, choices: Choices) -> bytes:
    """A few byte-level edits: flip, delete a run, insert, duplicate a run."""
    buffer = bytearray(data)
    for _ in range(choices.integer(1, 4)):
        if not buffer:
            buffer += choices.raw(4)
        op = choices.integer(0, 3)
        at = choices.integer(0, len(buffer) - 1)
        if op == 0:
            buffer[at] ^= 1 << choices.integer(0, 7)
        elif op == 1:
            del buffer[at : at + choices.integer(1, 16)]
        elif op == 2:
            buffer[at:at] = choices.raw(choices.integer(1, 8))
        else:
            buffer[at:at] = buffer[at : at + choices.integer(1, 64)]
    return bytes(buffer)


def resign(statement: Any) -> bytes:
    """An envelope around any statement, correctly signed with the sample key.

    So the fuzzer reaches the statement checks behind the signature, as if the signer
    had written a malformed statement.
    """
    payload = json.dumps(
        statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
    ).encode("utf-8", "surrogatepass")
    signature = KEY.sign(pae(PAYLOAD_TYPE, payload))
    envelope = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": NEW_ENVELOPE["signatures"][0]["keyid"],
                        "sig": base64.b64encode(signature).decode()}],
    }  # fmt: skip
    return json.dumps(envelope).encode()


def proof_input(choices: Choices) -> bytes:
    """One proof document to try: raw bytes, a byte-mutated or a structurally mutated one."""
    sample = PROOFS[choices.integer(0, len(PROOFS) - 1)]
    mode = choices.integer(0, 2)
    if mode == 0:
        return choices.raw(choices.integer(0, 64))
    if mode == 1:
        return mutate_bytes(json.dumps(sample).encode(), choices)
    return to_bytes(mutate_json(sample, choices), choices)


def receipt_input(choices: Choices) -> bytes:
    """One receipt to try: raw, byte-mutated, envelope-mutated, or a re-signed statement."""
    envelope = RECEIPTS[choices.integer(0, 1)]
    mode = choices.integer(0, 3)
    if mode == 0:
        return choices.raw(choices.integer(0, 64))
    if mode == 1:
        return mutate_bytes(json.dumps(envelope).encode(), choices)
    if mode == 2:
        return to_bytes(mutate_json(envelope, choices), choices)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    return resign(mutate_json(statement, choices))


# --- running a target --------------------------------------------------------------


class _ProviderChoices:
    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def integer(self, low: int, high: int) -> int:
        return self.provider.ConsumeIntInRange(low, high)

    def raw(self, size: int) -> bytes:
        return self.provider.ConsumeBytes(size)


def run(name: str, make_input: Any, check: Any, argv: list[str]) -> None:
    """Fuzz ``check(make_input(choices))`` for a time budget, with atheris if installed.

    ``--seconds N`` (default 60) is the budget; ``--fallback`` uses seeded random choices
    even when atheris is there; other arguments go to libFuzzer. The fallback prints the
    inputs run and the crashes found (each saved under bench/out/fuzz/); libFuzzer
    prints its own final stats and stops at the first crash, saving it there too.
    """
    seconds = 60
    if "--seconds" in argv:
        at = argv.index("--seconds")
        seconds = int(argv[at + 1])
        del argv[at : at + 2]
    fallback = "--fallback" in argv
    argv = [a for a in argv if a != "--fallback"]
    crashes = Path(__file__).resolve().parents[1] / "out" / "fuzz"  # bench/out: ignored
    crashes.mkdir(parents=True, exist_ok=True)
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is not None and not fallback:

        def one_input(data: bytes) -> None:
            check(make_input(_ProviderChoices(atheris.FuzzedDataProvider(data))))

        atheris.Setup(
            [sys.argv[0], f"-max_total_time={seconds}", "-timeout=10", "-max_len=4096",
             "-print_final_stats=1", f"-artifact_prefix={crashes}/{name}-", *argv],
            one_input,
        )  # fmt: skip
        atheris.Fuzz()
        return
    import time
    import traceback

    print(f"{name}: atheris {'not used' if fallback else 'not installed'}; random mutations")
    deadline = time.monotonic() + seconds
    runs = found = 0
    seed = 0
    while time.monotonic() < deadline:
        data = make_input(RandomChoices(random.Random(seed)))
        seed += 1
        runs += 1
        try:
            check(data)
        except Exception:
            found += 1
            path = crashes / f"{name}-{hashlib.sha256(data).hexdigest()[:16]}"
            path.write_bytes(data)
            traceback.print_exc(limit=3)
    print(f"{name}: {runs} inputs in {seconds} s, {found} crashes")
