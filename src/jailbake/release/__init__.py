"""Releases: what a build hands on, and how it is checked on the way.

Owns the artifacts directory and its manifest.json (artifacts), the SPDX SBOM
(spdx), and publishing a release with SHA256SUMS to a directory or a server
(publish).

May import: jailbake.core, jailbake.cache and jailbake.model (tests/test_layout.py
keeps it so)."""
