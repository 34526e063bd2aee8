"""Where steps run: on this machine (host), in containers (docker, with engine for
the Docker Engine API and builder images), or on a Remote Execution API service
(remote/: its client, trees and executor).

Owns the step's contract (step), each executor, and the builder images.

May import: jailbake.core and jailbake.cache (tests/test_layout.py keeps it so)."""
