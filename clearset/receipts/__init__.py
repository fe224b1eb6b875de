"""Receipts: a signed, checkable record of exactly which items a data set held.

The kept items' SHA-256 values, sorted, are the leaves of an RFC 9162 Merkle tree
(``merkle``); its root goes into an in-toto statement (``statement``) signed in a DSSE
envelope with Ed25519 (``dsse``); ``proofs`` shows one item in or out of the set against
that receipt. A verifier needs only the receipt, the public key and the proof.

Typical use, by the CLI or from Python::

    tree = MerkleTree.build(sorted_kept_sha256, run / "tree.bin")
    commitment, salt, count = commit_removed(removed_sha256)
    statement = build_statement(dataset_name=..., tree_size=tree.size, root=tree.root, ...)
    envelope = sign_statement(statement, load_private_key(keydir / "clearset.key"))
    proof = prove(MerkleTree.open(run / "tree.bin"), item_sha256, receipt_digest(envelope))
    verify(envelope, proof, load_public_key("clearset.pub"))  # raises VerificationError
"""

from clearset.receipts.dsse import (
    PAYLOAD_TYPE,
    envelope_payload,
    generate_keypair,
    insecure_key_warning,
    key_id,
    load_private_key,
    load_public_key,
    pae,
    parse_envelope,
    receipt_digest,
    sign_statement,
    verify_envelope,
)
from clearset.receipts.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    hash_leaf,
    hash_node,
    inclusion_path_of,
    root_of,
    verify_inclusion,
)
from clearset.receipts.proofs import (
    PROOF_VERSION,
    PROOF_VERSIONS,
    check_removed_form,
    encode_path,
    load_proof,
    proof_to_json,
    prove,
    prove_removed,
    verify,
    verify_proof,
    verify_removed,
)
from clearset.receipts.statement import (
    PREDICATE_TYPE,
    build_statement,
    canonical_json,
    check_statement,
    commit_removed,
    open_commitment,
    parse_json,
    statement_digest,
    tree_of,
)

__all__ = [
    "EMPTY_ROOT",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "PROOF_VERSION",
    "PROOF_VERSIONS",
    "MerkleTree",
    "build_statement",
    "canonical_json",
    "check_removed_form",
    "encode_path",
    "check_statement",
    "commit_removed",
    "envelope_payload",
    "generate_keypair",
    "hash_leaf",
    "hash_node",
    "inclusion_path_of",
    "insecure_key_warning",
    "key_id",
    "load_private_key",
    "load_proof",
    "load_public_key",
    "open_commitment",
    "pae",
    "parse_envelope",
    "parse_json",
    "proof_to_json",
    "prove",
    "prove_removed",
    "receipt_digest",
    "root_of",
    "sign_statement",
    "statement_digest",
    "tree_of",
    "verify",
    "verify_envelope",
    "verify_inclusion",
    "verify_proof",
    "verify_removed",
]
