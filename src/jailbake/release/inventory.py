"""What a root file system holds, as an SBOM lists it: the Debian packages its dpkg
database says are installed, each with the licence its copyright file states where
that file is machine-readable (Debian's copyright format 1.0, DEP-5).

A root file system is a recipe's output: a tar archive or a directory. What it says
is data, never trusted: fields are checked by kind and sizes are bounded; a package
that does not pass is left out and the reason logged."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..core import files

if TYPE_CHECKING:
    import tarfile

log = logging.getLogger(__name__)

STATUS = "var/lib/dpkg/status"
DOC = "usr/share/doc"
MAX_STATUS = 64 << 20
MAX_COPYRIGHT = 1 << 20

_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]{0,99}")
_VERSION = re.compile(r"[0-9][A-Za-z0-9.+~:-]{0,99}")
_ARCH = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_DEP5 = "copyright-format/1.0"

# Debian's short licence names (DEP-5) and their SPDX identifiers.
DEBIAN_LICENSES = {
    "apache-2": "Apache-2.0", "apache-2.0": "Apache-2.0", "artistic": "Artistic-1.0-Perl",
    "artistic-2.0": "Artistic-2.0", "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause", "bsd-4-clause": "BSD-4-Clause", "bsl-1.0": "BSL-1.0",
    "cc0-1.0": "CC0-1.0", "cc-by-sa-3.0": "CC-BY-SA-3.0", "cc-by-sa-4.0": "CC-BY-SA-4.0",
    "curl": "curl", "expat": "MIT", "mit": "MIT", "fsfap": "FSFAP", "fsful": "FSFUL",
    "fsfullr": "FSFULLR", "gfdl-1.2": "GFDL-1.2-only", "gfdl-1.2+": "GFDL-1.2-or-later",
    "gfdl-1.3": "GFDL-1.3-only", "gfdl-1.3+": "GFDL-1.3-or-later",
    "gpl-1": "GPL-1.0-only", "gpl-1+": "GPL-1.0-or-later", "gpl-2": "GPL-2.0-only",
    "gpl-2+": "GPL-2.0-or-later", "gpl-3": "GPL-3.0-only", "gpl-3+": "GPL-3.0-or-later",
    "gpl-2.0": "GPL-2.0-only", "gpl-2.0+": "GPL-2.0-or-later", "gpl-3.0": "GPL-3.0-only",
    "gpl-3.0+": "GPL-3.0-or-later", "cc0": "CC0-1.0", "sleepycat": "Sleepycat",
    "isc": "ISC", "lgpl-2": "LGPL-2.0-only", "lgpl-2+": "LGPL-2.0-or-later",
    "lgpl-2.1": "LGPL-2.1-only", "lgpl-2.1+": "LGPL-2.1-or-later", "lgpl-3": "LGPL-3.0-only",
    "lgpl-3+": "LGPL-3.0-or-later", "mpl-1.1": "MPL-1.1", "mpl-2.0": "MPL-2.0",
    "openssl": "OpenSSL", "psf-2": "PSF-2.0", "python-2.0": "Python-2.0", "x11": "X11",
    "zlib": "Zlib", "bzip2-1.0.6": "bzip2-1.0.6", "unicode-dfs-2016": "Unicode-DFS-2016",
    "wtfpl": "WTFPL", "0bsd": "0BSD", "mit-0": "MIT-0", "ofl-1.1": "OFL-1.1",
}  # fmt: skip


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    architecture: str
    source: str  # the source package's name
    license: str  # an SPDX expression, or '' where the copyright file says none plainly
    source_version: str = ""  # the source package's version, where it differs

    @property
    def purl(self) -> str:
        from packageurl import PackageURL

        qualifiers = {"arch": self.architecture}
        if self.source != self.name:
            qualifiers["upstream"] = self.source
        return str(PackageURL("deb", "debian", self.name, self.version, qualifiers).to_string())

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "architecture": self.architecture,
            "source": self.source,
            "license": self.license,
            **({"source_version": self.source_version} if self.source_version else {}),
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> Package:
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            architecture=str(data["architecture"]),
            source=str(data["source"]),
            license=str(data["license"]),
            source_version=str(data.get("source_version", "")),
        )


@dataclass(frozen=True)
class Inventory:
    """A root file system's packages, and the distribution it says it is."""

    packages: list[Package]
    os_id: str = ""  # os-release's ID: debian
    os_version: str = ""  # and VERSION_ID: 12

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"packages": [p.to_dict() for p in self.packages]}
        if self.os_id:
            found["os"] = {"id": self.os_id, "version_id": self.os_version}
        return found


def paragraphs(text: str) -> Iterator[dict[str, str]]:
    """The stanzas of a deb822 file: field -> value (continuation lines joined by \\n)."""
    fields: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, ""
        elif line[0] in " \t" and last:
            fields[last] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            last = key.strip().lower()
            fields[last] = value.strip()
    if fields:
        yield fields


def installed(status: str) -> list[Package]:
    """The packages dpkg's status file says are installed (names, versions and
    architectures checked), by name and architecture, each once."""
    found: dict[tuple[str, str], Package] = {}
    for fields in paragraphs(status):
        if not fields.get("status", "").endswith(" installed"):
            continue
        name, version = fields.get("package", ""), fields.get("version", "")
        arch = fields.get("architecture", "")
        if not (_NAME.fullmatch(name) and _VERSION.fullmatch(version) and _ARCH.fullmatch(arch)):
            log.warning("dpkg status: a package entry that is not one: %r", name[:40])
            continue
        source, _, rest = fields.get("source", "").partition(" ")
        source_version = rest.strip().removeprefix("(").removesuffix(")")
        if not _VERSION.fullmatch(source_version) or source_version == version:
            source_version = ""
        source = source if _NAME.fullmatch(source) else name
        found.setdefault((name, arch), Package(name, version, arch, source, "", source_version))
    return [found[k] for k in sorted(found)]


def _license_id(token: str) -> str:
    key = token.strip().lower()
    if key in DEBIAN_LICENSES:
        return DEBIAN_LICENSES[key]
    return "LicenseRef-Debian-" + re.sub(r"[^A-Za-z0-9.]+", "-", token.strip()).strip("-")[:60]


def spdx_expression(synopsis: str) -> str:
    """A DEP-5 licence synopsis ('GPL-2+ or Artistic') as an SPDX expression."""
    words = synopsis.replace(",", " ").split()
    if not words:
        return ""
    parts: list[str] = []
    for word in words:
        if any(c in word for c in "()") or not re.sub(r"[^A-Za-z0-9]", "", word):
            return ""  # grouping, or no name at all: not plain enough to say
        if word.lower() in ("or", "and"):
            if not parts or parts[-1] in ("OR", "AND"):
                return ""
            parts.append(word.upper())
        elif parts and parts[-1] not in ("OR", "AND"):
            return ""  # 'with exception', parentheses: not plain enough to say
        else:
            parts.append(_license_id(word))
    return "" if parts[-1] in ("OR", "AND") else " ".join(parts)


def license_of(copyright_text: str) -> str:
    """The licence of `Files: *` in a machine-readable copyright file ('' otherwise)."""
    stanzas = list(paragraphs(copyright_text))
    if not stanzas or _DEP5 not in stanzas[0].get("format", ""):
        return ""
    for fields in stanzas[1:]:
        if "*" in fields.get("files", "").split() and "license" in fields:
            return spdx_expression(fields["license"].split("\n", 1)[0])
    return ""


_OS_FIELD = re.compile(r"[A-Za-z0-9._-]{1,40}")
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")


def os_release(text: str) -> tuple[str, str]:
    """(ID, VERSION_ID) of an os-release file, each checked ('' where not given)."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("ID", "VERSION_ID"):
            value = value.strip().strip("\"'")
            found[key] = value if _OS_FIELD.fullmatch(value) else ""
    return found.get("ID", ""), found.get("VERSION_ID", "")


def _inventory(status: str, texts: dict[str, str], release: str) -> Inventory:
    packages = [
        Package(p.name, p.version, p.architecture, p.source,
                license_of(texts.get(p.name, "")), p.source_version)
        for p in installed(status)
    ]  # fmt: skip
    return Inventory(packages, *os_release(release))


def _member_name(name: str) -> str:
    return PurePosixPath(name).as_posix().removeprefix("./").lstrip("/")


def of_tar(path: Path) -> Inventory | None:
    """The packages of a root file system archive (None: it has no dpkg database)."""
    import tarfile  # only for a build that has a tar output

    status: str | None = None
    releases: dict[str, str] = {}
    texts: dict[str, str] = {}
    links: dict[str, str] = {}  # usr/share/doc/<pkg> -> the package whose directory it is
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                name = _member_name(member.name)
                if name == STATUS and member.isfile() and member.size <= MAX_STATUS:
                    status = _read(tar, member)
                    continue
                if name in OS_RELEASE and member.isfile() and member.size <= MAX_COPYRIGHT:
                    releases[name] = _read(tar, member)
                    continue
                parts = name.split("/")  # usr share doc <package> [copyright]
                if name.startswith(DOC + "/") and len(parts) == 5 and parts[4] == "copyright":
                    if member.isfile() and member.size <= MAX_COPYRIGHT:
                        texts[parts[3]] = _read(tar, member)
                elif name.startswith(DOC + "/") and len(parts) == 4 and member.issym():
                    links[parts[3]] = PurePosixPath(member.linkname).name
    except (tarfile.TarError, OSError) as exc:
        log.warning("%s: not a readable tar archive: %s", path, exc)
        return None
    if status is None:
        return None
    for name, target in links.items():
        if name not in texts and target in texts:
            texts[name] = texts[target]
    release = next((releases[n] for n in OS_RELEASE if n in releases), "")
    return _inventory(status, texts, release)


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    f = tar.extractfile(member)
    return f.read().decode("utf-8", errors="replace") if f is not None else ""


def _inside(root: Path, rel: str) -> Path | None:
    """root/rel if no component of it below root is a link (a root file system's links
    point into the machine that reads it, not into the tree)."""
    path = root
    for part in rel.split("/"):
        path = path / part
        if path.is_symlink():
            return None
    return path


def _text_of(path: Path | None, limit: int) -> str | None:
    if path is None:
        return None
    try:
        return files.read_limited(path, limit).decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return None


def of_dir(root: Path) -> Inventory | None:
    """The packages of a root file system directory (None: it has no dpkg database).
    Nothing is read through a link: a tree's /usr may point at the reader's own."""
    status = _text_of(_inside(root, STATUS), MAX_STATUS)
    if status is None:
        return None
    texts: dict[str, str] = {}
    doc = _inside(root, DOC)
    if doc is not None and doc.is_dir():
        for entry in sorted(doc.iterdir()):
            name = entry.name
            if entry.is_symlink():  # followed only to a sibling directory
                entry = doc / PurePosixPath(str(entry.readlink())).name
            if entry.is_symlink() or not entry.is_dir():
                continue
            text = _text_of(_inside(entry, "copyright"), MAX_COPYRIGHT)
            if text is not None:
                texts[name] = text
    release = ""
    for name in OS_RELEASE:
        if (text := _text_of(_inside(root, name), MAX_COPYRIGHT)) is not None:
            release = text
            break
    return _inventory(status, texts, release)
