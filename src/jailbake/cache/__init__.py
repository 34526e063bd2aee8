"""The cache: content-addressed blobs and trees, results under their keys, and the
shared remote cache, each checked before it is used.

Owns keys (sha256 over canonical JSON, a tree's manifest), seal (an output tree
normalized, hashed and stamped), store (the content store: blobs, trees and action
results), history (what earlier builds left: last keys, executors, durations, logs),
sha1 (the SHA-1 memo SPDX wants), verify (checking and repairing a cache) and remote
(the HTTP cache a team shares).

May import: jailbake.core only (tests/test_layout.py keeps it so)."""
