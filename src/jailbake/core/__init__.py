"""The ground floor: what every other part of jailbake stands on, and nothing else.

Owns errors with their user-facing messages and exit codes (errors), the one way
host processes start (run) and git runs (gitcmd), paths that never follow a link
(paths), bounded HTTP (net), YAML read without surprises (yamlfile), field checks
that name file, line and field (fields), the terminal (console), and file helpers:
removing a tree, copying while hashing, whether a process runs (files).

May import: the standard library and third-party packages only; never another
jailbake package (tests/test_layout.py keeps it so)."""
