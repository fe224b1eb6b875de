"""Fuzz the proof parser and verifier (`load_proof`, `verify_proof`, `verify_removed`).

Any bytes must give a verdict or a one-line VerificationError, never another exception
and never a hang (libFuzzer -timeout=10). Inputs are raw bytes, byte-level edits of the
sample proofs, and structural JSON edits of them (see receipt_cases). Run:

    python bench/fuzz/fuzz_proof.py --seconds 60            # atheris (libFuzzer)
    python bench/fuzz/fuzz_proof.py --seconds 60 --fallback # seeded random mutations
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import atheris
except ImportError:  # the fallback in receipt_cases.run says so
    atheris = None
if atheris is not None and "--fallback" not in sys.argv:
    # Coverage feedback from clearset's code only: instrumenting numpy and cryptography
    # too takes minutes and guides nothing we own.
    with atheris.instrument_imports(include=["clearset", "receipt_cases"]):
        import receipt_cases
else:
    import receipt_cases

if __name__ == "__main__":
    receipt_cases.run("proof", receipt_cases.proof_input, receipt_cases.check_proof, sys.argv[1:])
