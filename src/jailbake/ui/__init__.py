"""What a person sees of a build: the live progress display (progress), the trace
(trace) and the HTML report (report), the machine's load (sampler), the observer that
joins them for a build (view), and the graph drawn with Graphviz (dot).

May import: jailbake.bake and every package below it; nothing imports it but the
command line (tests/test_layout.py keeps it so)."""
