"""Show that this tree writes the same outputs as another commit, byte for byte.

For a refactor that must not change behaviour: the demo data set (its webdataset, folder
and Hugging Face parquet forms, with broken members and a failed download on purpose) is
scanned against the demo's lists, cleaned and signed, once by BASE (a commit, extracted
with `git archive`) and once by this working tree, each in its own process. Then every
manifest and matches file, every file of the cleaned copies, and the receipt's tree root
and leaf count are compared. Run-folder bookkeeping that carries times or absolute
paths (run.json, history, markers, clean records, reports) is not compared.

    python scripts/same_outputs.py --base 7803c27

Prints one line per form and exits 1 on any difference, naming the first files that
differ. Both sides use the same demo data, written once by this tree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORMS = ("webdataset", "folder", "hf")


def extract(base: str, into: Path) -> Path:
    """The BASE commit's tree, unpacked into `into`."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", base], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def clearset(tree: Path, *args: str, cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "CLEARSET_PROGRESS_INTERVAL": "3600"}
    proc = subprocess.run(
        [sys.executable, "-m", "clearset.cli", *args, "--no-progress"]
        if args[0] in ("scan", "clean")
        else [sys.executable, "-m", "clearset.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: clearset {' '.join(args)} failed:\n{proc.stderr}")


def run_form(tree: Path, source: Path, lists: list[str], work: Path) -> dict[str, str]:
    """Scan, clean and sign one form with one tree; the digests of what it wrote."""
    run, dest, keys = work / "run", work / "cleaned", work / "keys"
    work.mkdir(parents=True)
    clearset(tree, "scan", str(source), "--out", str(run), "--workers", "1",
             "--allow-missing", *lists, cwd=work)  # fmt: skip
    clearset(tree, "clean", str(run), "--to", str(dest), "--workers", "1", cwd=work)
    clearset(tree, "keygen", str(keys), cwd=work)
    clearset(tree, "receipt", str(run), "--key", str(keys / "clearset.key"), cwd=work)
    found: dict[str, str] = {}
    for folder, label in ((run / "manifest", "manifest"), (run / "matches", "matches"),
                          (run / "cleaned" / "manifest", "cleaned-manifest"),
                          (dest, "copy")):  # fmt: skip
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            found[f"{label}/{path.relative_to(folder)}"] = _sha256(path)
    if (run / "matches.parquet").exists():
        found["matches.parquet"] = _sha256(run / "matches.parquet")
    envelope = json.loads((run / "receipt.dsse.json").read_text())
    import base64

    statement = json.loads(base64.b64decode(envelope["payload"]))
    tree_record = statement["predicate"]["tree"]
    found["receipt-root"] = f"{tree_record['root']} ({tree_record['size']} leaves)"
    return found


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare with")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from clearset.demo import build_demo_data

    with tempfile.TemporaryDirectory(prefix="clearset-same-") as tmp:
        top = Path(tmp)
        base_tree = extract(args.base, top / "base")
        demo = build_demo_data(top / "data")
        lists = ["--list", str(demo.pdq_list), "--list", str(demo.md5_list)]
        sources = {"webdataset": demo.webdataset, "folder": demo.folder,
                   "hf": demo.hf_parquet}  # fmt: skip
        differ = 0
        for form in FORMS:
            old = run_form(base_tree, sources[form], lists, top / "old" / form)
            new = run_form(ROOT, sources[form], lists, top / "new" / form)
            changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            if changed:
                differ += 1
                print(f"{form}: DIFFERENT in {len(changed)} of {len(old | new)} outputs, "
                      f"first: {', '.join(changed[:5])}")  # fmt: skip
            else:
                print(f"{form}: same {len(new)} outputs, receipt root {new['receipt-root']}")
        return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
