"""Image writers: initramfs archives and disk images, reproducible to the byte.

Owns the newc cpio writer, device tables, root file system assembly, the SD image
layout and its in-builder tool, the parsing of a recipe's `rootfs:` and `image:`, and
booting an image under QEMU as a layer describes it (qemu: `jailbake run`).

May import: jailbake.core only. sdtool.py runs inside the image-tools container on
its own and imports nothing of jailbake (tests/test_layout.py keeps both so)."""
