"""Workspaces: a recipe's sources as a directory the user edits (jailbake
workspace), synced into a kept build directory for incremental builds, and its
patches as git commits and back (patchstack).

May import: jailbake.core, jailbake.cache and jailbake.model (tests/test_layout.py
keeps it so)."""
