"""Flattened device trees (.dtb): read one, change nodes and properties, write it back.

What a boot loader does to a device tree before it starts a kernel (the kernel's
command line and initramfs in /chosen) and what emulation needs (a node QEMU does not
model disabled), without dtc: the blob is parsed into nodes and written anew. The
format is the Devicetree Specification's, version 17.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..core.errors import JailbakeError

MAGIC = 0xD00DFEED
_BEGIN_NODE, _END_NODE, _PROP, _NOP, _END = 1, 2, 3, 4, 9
_HEADER = struct.Struct(">10I")
MAX_DEPTH = 64
MAX_SIZE = 2 << 20  # Linux's limit on arm64 (MAX_FDT_SIZE)


class FdtError(JailbakeError):
    """A device tree blob that is not one."""


@dataclass
class Node:
    name: str  # "" for the root, "mmc@7e300000" below it
    properties: dict[str, bytes] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    def child(self, name: str) -> Node | None:
        return next((c for c in self.children if c.name == name), None)

    @property
    def unit_address(self) -> int | None:
        """The number after @ in the node's name, if it has one."""
        _, at, unit = self.name.partition("@")
        try:
            return int(unit.split(",")[0], 16) if at else None
        except ValueError:
            return None


@dataclass
class Tree:
    root: Node
    reserved: list[tuple[int, int]] = field(default_factory=list)  # (address, size)
    boot_cpuid: int = 0

    def find(self, path: str) -> Node | None:
        node: Node | None = self.root
        for part in (p for p in path.split("/") if p):
            node = node.child(part) if node else None
        return node

    def walk(self) -> list[tuple[str, Node]]:
        """Every node with its path, parents first."""
        found: list[tuple[str, Node]] = []

        def visit(path: str, node: Node) -> None:
            found.append((path or "/", node))
            for c in node.children:
                visit(f"{path}/{c.name}", c)

        visit("", self.root)
        return found

    def node(self, path: str) -> Node:
        """The node at path, made (with its parents) if the tree has none."""
        node = self.root
        for part in (p for p in path.split("/") if p):
            nxt = node.child(part)
            if nxt is None:
                nxt = Node(part)
                node.children.append(nxt)
            node = nxt
        return node


def string(value: str) -> bytes:
    return value.encode() + b"\0"


def cells(*values: int, size: int = 1) -> bytes:
    """values as big-endian numbers of size 32-bit cells each."""
    out = b""
    for v in values:
        out += v.to_bytes(4 * size, "big")
    return out


def parse(blob: bytes, origin: str) -> Tree:
    """The tree of a .dtb; origin names it in errors."""

    def bad(why: str) -> FdtError:
        return FdtError(f"{origin}: not a device tree blob: {why}")

    if len(blob) < _HEADER.size:
        raise bad("shorter than its header")
    if len(blob) > MAX_SIZE:
        raise bad(f"{len(blob)} bytes, more than the {MAX_SIZE >> 20} MiB Linux takes")
    (magic, total, off_struct, off_strings, off_rsv, version, _last, cpuid, size_strings,
     size_struct) = _HEADER.unpack_from(blob)  # fmt: skip
    if magic != MAGIC:
        raise bad(f"magic {magic:#x}, expected {MAGIC:#x}")
    if version < 17 or total > len(blob):
        raise bad(f"version {version} (17 expected), {total} bytes in a {len(blob)}-byte file")
    blob = blob[:total]
    strings = blob[off_strings : off_strings + size_strings]
    structure = blob[off_struct : off_struct + size_struct]
    if len(strings) != size_strings or len(structure) != size_struct:
        raise bad("its blocks lie outside the file")
    reserved = []
    pos = off_rsv
    while True:
        if pos + 16 > len(blob):
            raise bad("the memory reservation map has no end")
        address, size = struct.unpack_from(">QQ", blob, pos)
        pos += 16
        if address == 0 and size == 0:
            break
        reserved.append((address, size))

    pos = 0

    def word() -> int:
        nonlocal pos
        if pos + 4 > len(structure):
            raise bad("the structure block ends early")
        (value,) = struct.unpack_from(">I", structure, pos)
        pos += 4
        return int(value)

    def cstring(data: bytes, at: int) -> tuple[str, int]:
        """The NUL-terminated name at at, and the offset just past its NUL."""
        end = data.find(b"\0", at)
        if end < 0:
            raise bad("a name has no end")
        return data[at:end].decode("utf-8", "replace"), end + 1

    stack: list[Node] = []
    root: Node | None = None
    while True:
        token = word()
        if token == _BEGIN_NODE:
            name, after = cstring(structure, pos)
            pos = (after + 3) & ~3
            node = Node(name)
            if stack:
                stack[-1].children.append(node)
            elif root is None:
                root = node
            else:
                raise bad("two root nodes")
            stack.append(node)
            if len(stack) > MAX_DEPTH:
                raise bad(f"nodes nested deeper than {MAX_DEPTH}")
        elif token == _END_NODE:
            if not stack:
                raise bad("a node ends that never began")
            stack.pop()
        elif token == _PROP:
            length, name_offset = word(), word()
            if not stack or pos + length > len(structure) or name_offset >= len(strings):
                raise bad("a property lies outside its node or block")
            stack[-1].properties[cstring(strings, name_offset)[0]] = structure[pos : pos + length]
            pos = (pos + length + 3) & ~3
        elif token == _NOP:
            continue
        elif token == _END:
            break
        else:
            raise bad(f"token {token:#x} at {pos - 4}")
    if root is None or stack:
        raise bad("no complete root node")
    return Tree(root, reserved, cpuid)


def dump(tree: Tree) -> bytes:
    """The tree as a .dtb (version 17), its strings shared."""
    strings = bytearray()
    offsets: dict[str, int] = {}
    structure = bytearray()

    def put(*words: int) -> None:
        structure.extend(struct.pack(f">{len(words)}I", *words))

    def pad() -> None:
        structure.extend(b"\0" * (-len(structure) % 4))

    def emit(node: Node) -> None:
        put(_BEGIN_NODE)
        structure.extend(node.name.encode() + b"\0")
        pad()
        for name, value in node.properties.items():
            if name not in offsets:
                offsets[name] = len(strings)
                strings.extend(name.encode() + b"\0")
            put(_PROP, len(value), offsets[name])
            structure.extend(value)
            pad()
        for child in node.children:
            emit(child)
        put(_END_NODE)

    emit(tree.root)
    put(_END)
    rsv = b"".join(struct.pack(">QQ", a, s) for a, s in tree.reserved) + bytes(16)
    off_rsv = (_HEADER.size + 7) & ~7
    off_struct = off_rsv + len(rsv)
    off_strings = off_struct + len(structure)
    total = off_strings + len(strings)
    header = _HEADER.pack(
        MAGIC, total, off_struct, off_strings, off_rsv, 17, 16, tree.boot_cpuid,
        len(strings), len(structure),
    )  # fmt: skip
    return header.ljust(off_rsv, b"\0") + rsv + bytes(structure) + bytes(strings)
