"""A synthetic OSV database the size of osv.dev's Debian and Linux ecosystems, in
their records' shape, for timing `jailbake cve` (benchmarks/cve.sh):

    python3 benchmarks/osv_db.py DIR [--debian N] [--linux N] [--packages FILE]

Debian records (DEBIAN-CVE-*) each name a source package in Debian:11, Debian:12 and
Debian:13 with `introduced: 0` and a fixed version, and an urgency; Linux records
(JB-LINUX-*) name the Kernel package with ECOSYSTEM ranges per stable branch and a
GIT range on the kernel's repository, as the kernel CNA's records do. Ids are
invented. Source package names come from --packages (one per line: say, the sources
of a built root file system, so that some match) plus made-up names."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

KERNEL_GIT = "https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git"


def debian(i: int, name: str, rnd: random.Random) -> dict[str, object]:
    affected = []
    for release in ("11", "12", "13"):
        fixed = f"{rnd.randint(0, 9)}.{rnd.randint(0, 30)}-{rnd.randint(1, 5)}+deb{release}u1"
        affected.append({
            "package": {"ecosystem": f"Debian:{release}", "name": name,
                        "purl": f"pkg:deb/debian/{name}?arch=source"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
            "versions": [f"{rnd.randint(0, 9)}.{rnd.randint(0, 30)}-{n}" for n in range(1, 4)],
            "ecosystem_specific": {"urgency": rnd.choice(["low", "medium", "high"])},
        })  # fmt: skip
    return {
        "schema_version": "1.6.0", "id": f"DEBIAN-CVE-2099-{i:06d}",
        "modified": "2026-12-01T00:00:00Z", "published": "2026-01-01T00:00:00Z",
        "upstream": [f"CVE-2099-{i:06d}"],
        "details": f"An invented issue {i} in {name}, in the shape of Debian's records.",
        "affected": affected,
        "references": [{"type": "ADVISORY",
                        "url": f"https://security-tracker.debian.org/tracker/CVE-2099-{i:06d}"}],
    }  # fmt: skip


def linux(i: int, rnd: random.Random) -> dict[str, object]:
    events: list[dict[str, str]] = [{"introduced": "0"}]
    for branch in (4, 5, 6):
        minor = rnd.randint(0, 19)
        events += [{"introduced": f"{branch}.{minor}"},
                   {"fixed": f"{branch}.{minor}.{rnd.randint(1, 300)}"}]  # fmt: skip
    commits = [f"{rnd.getrandbits(160):040x}" for _ in range(4)]
    return {
        "schema_version": "1.6.0", "id": f"JB-LINUX-{i:06d}", "aliases": [f"CVE-2098-{i:06d}"],
        "modified": "2026-12-01T00:00:00Z", "published": "2026-01-01T00:00:00Z",
        "summary": f"An invented kernel issue {i}",
        "details": "In the Linux kernel, the following vulnerability has been resolved: " * 4,
        "affected": [
            {"package": {"ecosystem": "Linux", "name": "Kernel"},
             "ranges": [{"type": "ECOSYSTEM", "events": events}]},
            {"ranges": [{"type": "GIT", "repo": KERNEL_GIT,
                         "events": [{"introduced": commits[0]}, {"fixed": commits[1]},
                                    {"introduced": commits[2]}, {"fixed": commits[3]}]}],
             "package": {"ecosystem": "", "name": ""}},
        ],
        "references": [{"type": "WEB", "url": f"https://git.kernel.org/stable/c/{c}"}
                       for c in commits],
        "severity": [{"type": "CVSS_V3",
                      "score": "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H"}],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--debian", type=int, default=60000)
    parser.add_argument("--linux", type=int, default=12000)
    parser.add_argument("--packages", type=Path)
    args = parser.parse_args()
    rnd = random.Random(42)
    names = [f"invented{n}" for n in range(3000)]
    if args.packages:
        names += args.packages.read_text().split()
    for i in range(args.debian):
        _write(args.dir / "Debian", debian(i, rnd.choice(names), rnd))
    for i in range(args.linux):
        _write(args.dir / "Linux", linux(i, rnd))


def _write(folder: Path, record: dict[str, object]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{record['id']}.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
