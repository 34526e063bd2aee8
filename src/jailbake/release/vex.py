"""OpenVEX documents (https://github.com/openvex/spec): reading the statements a layer
carries about vulnerabilities of its components ('not_affected: the driver is not in
the kernel's configuration'), and writing what `jailbake cve` found as one.

A layer's VEX file is input like a recipe: every field is checked by kind, and a file
that does not pass stops the command with one line naming it and the field."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import files
from ..core.errors import JailbakeError

MAX_VEX = 16 << 20

CONTEXT = "https://openvex.dev/ns/v0.2.0"
STATUSES = ("not_affected", "affected", "fixed", "under_investigation")
JUSTIFICATIONS = (
    "component_not_present",
    "vulnerable_code_not_present",
    "vulnerable_code_not_in_execute_path",
    "vulnerable_code_cannot_be_controlled_by_adversary",
    "inline_mitigations_already_exist",
)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,99}")
_PRODUCT = re.compile(r"[^\s\x00-\x1f\x7f]{1,500}")


class VexError(JailbakeError):
    pass


@dataclass(frozen=True)
class Statement:
    vulnerabilities: frozenset[str]  # the name and aliases
    products: frozenset[str]  # purls (with or without version), or recipe:NAME
    status: str
    justification: str = ""
    impact: str = ""
    action: str = ""
    source: str = ""  # the file it came from


def _text(value: Any, where: str, *, required: bool = False, limit: int = 2000) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise VexError(f"{where}: expected {'a non-empty' if required else 'a'} string")
    return value[:limit]


def read(path: Path) -> list[Statement]:
    """The statements of an OpenVEX document, checked."""
    try:
        data = json.loads(files.read_limited(path, MAX_VEX))
    except FileNotFoundError:
        raise VexError(f"{path}: no such VEX file") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise VexError(f"{path}: not a JSON file: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not str(data.get("@context", "")).startswith(
        "https://openvex.dev/ns"
    ):
        raise VexError(f"{path}: @context: expected an OpenVEX document ({CONTEXT})")
    raw = data.get("statements")
    if not isinstance(raw, list):
        raise VexError(f"{path}: statements: expected a list")
    statements = []
    for i, entry in enumerate(raw):
        where = f"{path}: statements[{i}]"
        if not isinstance(entry, dict):
            raise VexError(f"{where}: expected an object")
        vuln = entry.get("vulnerability")
        if not isinstance(vuln, dict):
            raise VexError(f"{where}.vulnerability: expected an object with a name")
        aliases = vuln.get("aliases") or []
        if not isinstance(aliases, list):
            raise VexError(f"{where}.vulnerability.aliases: expected a list of ids")
        names = [vuln.get("name"), *aliases]
        if not all(isinstance(n, str) and _ID.fullmatch(n) for n in names):
            raise VexError(f"{where}.vulnerability.name: expected an id like CVE-2024-1234")
        products = entry.get("products")
        if not isinstance(products, list) or not products:
            raise VexError(f"{where}.products: expected a list of {{'@id': purl}}")
        ids = []
        for j, product in enumerate(products):
            ident = product.get("@id") if isinstance(product, dict) else None
            if not isinstance(ident, str) or not _PRODUCT.fullmatch(ident):
                raise VexError(f"{where}.products[{j}].@id: expected a package URL or recipe:NAME")
            ids.append(ident)
        status = entry.get("status")
        if status not in STATUSES:
            raise VexError(f"{where}.status: expected one of {', '.join(STATUSES)}")
        justification = _text(entry.get("justification"), f"{where}.justification", limit=100)
        impact = _text(entry.get("impact_statement"), f"{where}.impact_statement")
        if status == "not_affected" and not (justification or impact):
            raise VexError(
                f"{where}: a not_affected statement needs a justification or an impact_statement"
            )
        if justification and justification not in JUSTIFICATIONS:
            raise VexError(f"{where}.justification: expected one of {', '.join(JUSTIFICATIONS)}")
        statements.append(
            Statement(
                vulnerabilities=frozenset(str(n) for n in names),
                products=frozenset(ids),
                status=str(status),
                justification=justification,
                impact=impact,
                action=_text(entry.get("action_statement"), f"{where}.action_statement"),
                source=str(path),
            )
        )
    return statements


def document(statements: Sequence[Mapping[str, Any]], ident: str, timestamp: str) -> dict[str, Any]:
    """An OpenVEX document of the given statements (already in OpenVEX's shape)."""
    return {
        "@context": CONTEXT,
        "@id": ident,
        "author": "jailbake cve",
        "timestamp": timestamp,
        "version": 1,
        "statements": list(statements),
    }
