"""Image writers: initramfs archives and disk images, reproducible to the byte."""
