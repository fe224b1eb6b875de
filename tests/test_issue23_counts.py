"""Issue 23 point 2: one data set's counts are the same in every command and document.

A webdataset of 60 benign pictures, each with a caption, where captions repeat (11
distinct texts): the scan, the clean, the receipt and `verify`, `status --json`,
report.json and each document must give the same samples, members, images and leaves,
in those words, and documents and receipt must name the same clean.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from clearset.demo import _add_member, encode_jpeg, generate_image
from clearset.errors import VerificationError
from clearset.receipts.dsse import envelope_payload
from tests.conftest import cli

PICTURES = 60
CAPTIONS = 11  # distinct caption texts: caption n is "caption number {n % 11}"
MATCHED = (3, 17, 33, 50)  # pictures the first list holds
MATCHED_LATER = (*MATCHED, 51)  # and the second
FORMATS = {
    "eu-ai-act": "eu-ai-act-summary.md",
    "ab2013": "ab2013.md",
    "croissant": "croissant.json",
    "datacard": "README.md",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("counts")
    rng = np.random.default_rng(23)
    pictures = [encode_jpeg(generate_image(rng), 85) for _ in range(PICTURES)]
    source = root / "shards"
    source.mkdir()
    for shard in range(2):
        with tarfile.open(source / f"{shard:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for n in range(shard * 30, shard * 30 + 30):
                _add_member(tar, f"{n:06d}.jpg", pictures[n])
                _add_member(tar, f"{n:06d}.txt", f"caption number {n % CAPTIONS}".encode())
    lists = {}
    for name, chosen in (("first", MATCHED), ("later", MATCHED_LATER)):
        lists[name] = root / f"{name}.txt"
        lists[name].write_text("".join(hashlib.sha256(pictures[i]).hexdigest() + "\n"
                                       for i in chosen))  # fmt: skip
    cli("keygen", str(root / "keys"), check=True)
    return {"root": root, "source": source, "lists": lists, "key": root / "keys" / "clearset.key"}


def expected(removed: tuple[int, ...]) -> dict:
    """The counts, from how the data set was built (not from clearset)."""
    kept = [n for n in range(PICTURES) if n not in removed]
    return {
        "scanned": {"samples": PICTURES, "members": 2 * PICTURES, "images": PICTURES,
                    "unreadable": 0, "without_bytes": 0, "other_members": PICTURES},
        "kept": {"samples": len(kept), "members": 2 * len(kept), "images": len(kept),
                 "unreadable": 0, "without_bytes": 0, "other_members": len(kept)},
        "removed": {"samples": len(removed), "members": 2 * len(removed)},
        # Every picture is distinct; the kept captions are the distinct texts among them.
        "leaves": {"images": len(kept), "other_members": len({n % CAPTIONS for n in kept})},
    }  # fmt: skip


def kept_text(counts: dict) -> str:
    kept = counts["kept"]
    return (
        f"{kept['samples']} samples ({kept['members']} members: {kept['images']} images, "
        f"{kept['other_members']} other members)"
    )


def leaves_text(counts: dict) -> str:
    leaves = counts["leaves"]
    total = leaves["images"] + leaves["other_members"]
    return f"{total} leaves ({leaves['images']} image, {leaves['other_members']} other-member)"


def statement(run: Path) -> dict:
    envelope = json.loads((run / "receipt.dsse.json").read_text())
    return json.loads(envelope_payload(envelope))


def check_everywhere(data: dict, run: Path, counts: dict, clean_out: str) -> None:
    """Every command and document gives `counts`, and names the same clean."""
    scanned = counts["scanned"]
    assert f"kept {kept_text(counts)}, removed {counts['removed']['samples']} samples " \
           f"({counts['removed']['members']} members)" in clean_out  # fmt: skip

    receipt = cli("receipt", str(run), "--key", str(data["key"]), check=True)
    assert (
        f"'shards': {leaves_text(counts)}: distinct SHA-256 of the kept members" in receipt.stdout
    )
    built = (f"{counts['kept']['members']} members in {counts['kept']['samples']} samples "
             f"({counts['kept']['images']} images, {counts['kept']['other_members']} other "
             "members)")  # fmt: skip
    assert f"built from the cleaned copy's {built}" in receipt.stdout
    predicate = statement(run)["predicate"]
    assert predicate["kept"] == {**counts["kept"], "leaves": counts["leaves"]}
    assert predicate["tree"]["size"] == sum(counts["leaves"].values())
    verified = cli("verify", str(run / "receipt.dsse.json"), "--pubkey",
                   str(data["key"].with_suffix(".pub")), check=True)  # fmt: skip
    assert leaves_text(counts) in verified.stdout and built in verified.stdout

    status = json.loads(cli("status", str(run), "--json", check=True).stdout)["counts"]
    assert {k: status[k] for k in ("scanned", "kept", "removed")} == {
        k: counts[k] for k in ("scanned", "kept", "removed")
    }
    assert status["leaves"] == {**counts["leaves"], "total": sum(counts["leaves"].values())}
    assert status["receipt_covers_clean"] is True
    said = cli("status", str(run), check=True).stdout
    assert f"{scanned['members']} members in {scanned['samples']} samples" in said
    assert kept_text(counts) in said and leaves_text(counts) in said

    cli("report", str(run), check=True)
    report = json.loads((run / "report.json").read_text())["counts"]
    assert {k: report[k] for k in ("scanned", "kept", "removed")} == {
        k: counts[k] for k in ("scanned", "kept", "removed")
    }
    clean = predicate["clean"]
    assert report["clean"]["manifest_digest"] == clean["manifest_digest"]["sha256"]

    for fmt, name in FORMATS.items():
        cli("document", str(run), "--format", fmt, check=True)
        text = (run / "documents" / name).read_text()
        if fmt == "croissant":
            text = json.dumps(json.loads(text), ensure_ascii=False)
        assert kept_text(counts) in text, fmt
        assert f"{scanned['members']} members in {scanned['samples']} samples" in text, fmt
        if fmt != "croissant":  # Croissant cites the receipt by digest in its protocol text
            assert leaves_text(counts) in text, fmt
            assert clean["manifest_digest"]["sha256"] in text, fmt
            for what, key in (("samples kept in the cleaned copy", "samples"),
                              ("members kept in the cleaned copy", "members"),
                              ("images kept in the cleaned copy", "images")):  # fmt: skip
                assert f"| {what} | {counts['kept'][key]} |" in text, (fmt, what)


def test_one_data_sets_counts_are_equal_in_every_command_and_document(data: dict) -> None:
    run = data["root"] / "run"
    scan = cli("scan", str(data["source"]), "--out", str(run), "--workers", "1",
               "--list", f"{data['lists']['first']},type=sha256", check=True)  # fmt: skip
    counts = expected(MATCHED)
    assert "120 members in 60 samples (60 images, 60 other members) in " in scan.stdout
    assert "4 samples matched" in scan.stdout
    clean = cli("clean", str(run), "--to", str(data["root"] / "copy"), check=True)
    check_everywhere(data, run, counts, clean.stdout)

    # A later clean against another list: the receipt, report and documents of the
    # earlier one move to RUN/history with it. An earlier receipt put back is named as
    # such by status, and refused by documents, until a receipt covers the new copy.
    cli("match", str(run), "--list", f"{data['lists']['later']},type=sha256", check=True)
    later = cli("clean", str(run), "--to", str(data["root"] / "copy2"), check=True)
    status = json.loads(cli("status", str(run), "--json", check=True).stdout)["counts"]
    assert status["kept"]["samples"] == PICTURES - len(MATCHED_LATER)
    assert status["leaves"] is None and not (run / "documents").exists()
    earlier = run / "history" / "clean-1"
    shutil.copy(earlier / "receipt.dsse.json", run / "receipt.dsse.json")
    status = json.loads(cli("status", str(run), "--json", check=True).stdout)["counts"]
    assert status["receipt_covers_clean"] is False
    assert status["leaves"]["total"] == sum(counts["leaves"].values())
    assert "covers an earlier cleaned copy" in cli("status", str(run)).stdout
    refused = cli("document", str(run), "--format", "datacard")
    assert refused.returncode != 0 and "covers an earlier cleaned copy" in refused.stderr
    check_everywhere(data, run, expected(MATCHED_LATER), later.stdout)


def _statement_with(kept: dict | None, size: int = 67) -> dict:
    from clearset.receipts.statement import build_statement

    return build_statement(
        dataset_name="shards", tree_size=size, root="ab" * 32, source_name="shards",
        manifest_digest="cd" * 32, lists=[], scan_started="2026-01-01T00:00:00Z",
        scan_finished="2026-01-01T00:01:00Z", removed_count=4, removed_commitment="ef" * 32,
        kept=kept,
    )  # fmt: skip


def test_a_receipts_kept_counts_must_add_up() -> None:
    from clearset.errors import InputError
    from clearset.receipts.statement import check_statement

    kept = {**expected(MATCHED)["kept"], "leaves": expected(MATCHED)["leaves"]}
    signed = _statement_with(kept)
    check_statement(signed)
    assert signed["predicate"]["kept"]["leaves"] == {"images": 56, "other_members": 11}
    check_statement(_statement_with(None))  # receipts made before `kept` still check
    with pytest.raises(InputError, match="leaves do not add up to the tree size"):
        _statement_with(kept, size=66)
    for change in ({"members": 111}, {"images": -1}, {"samples": "56"}):
        tampered = json.loads(json.dumps(signed))
        tampered["predicate"]["kept"].update(change)
        with pytest.raises(VerificationError, match="predicate.kept"):
            check_statement(tampered)
