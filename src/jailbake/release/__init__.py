"""Releases: what a build hands on, and how it is checked on the way.

Owns the artifacts directory and its manifest.json (artifacts), the SPDX SBOM
(spdx), the provenance (provenance), publishing a release with SHA256SUMS to a
directory or a server (publish), signing it (signing), checking a published release
(verify), and legal-info: licences, licence texts and the exact sources (legal).

May import: jailbake.core, jailbake.cache, jailbake.model and jailbake.sources
(tests/test_layout.py keeps it so)."""
