"""Sources: pinned inputs into the cache, and out of it again.

Owns fetching (downloads, mirrors, git), unpacking archives member by member,
remote layer repositories checked out (layerrepos, with lock files), licence files
checked, and mirror directories (sources and builder images, for offline builds).

May import: jailbake.core, jailbake.image, jailbake.cache, jailbake.executors (the
builder images a mirror saves) and jailbake.model (tests/test_layout.py keeps it so)."""
