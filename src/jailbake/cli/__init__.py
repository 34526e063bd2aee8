"""The command line: the only place where exceptions become messages and exit codes.

Owns the entry point (main), the grammar every command shares (grammar), the context a
command's work is made from (context), and one module per command under commands/,
each with its flags and its run function.

May import: every package (tests/test_layout.py keeps it so)."""

from .main import main

__all__ = ["main"]
