"""The model: what layer files and recipes say, read and validated, as a graph.

Owns recipes (their fields and checks), layers (kas files merged, with their
variables), remote layer repositories as pins (repos: what a layer says, and the
RepoCheckouts a caller hands in to check them out), layer fingerprints (scan), the
recipe graph and its dump. Reading the model runs no process and writes nothing:
whoever needs remote repositories checked out passes what does it.

May import: jailbake.core, jailbake.image and jailbake.cache (tests/test_layout.py
keeps it so)."""
