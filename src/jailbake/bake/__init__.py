"""Baking: planning and building recipes, a whole build, and questions about it.

Owns what a build is asked (options: BuildOptions, BuildReport), the one context a
command's store, layer repositories, graph, fetcher and builder are made from
(context), planning a recipe: its executor, builder identity, key and cached result
(plan), building it: sources prepared, step run, result stored (action), the schedule
(schedule), a whole build (build), the record that answers a no-op build (replay), the
questions list, explain and graph ask (query), removing results (clean), stepping into
a recipe's step (shell) and the workspace commands (edit). A build tells what happens
to an observer it is handed (observe); it prints nothing itself.

May import: every package below it: jailbake.core, image, cache, executors, model,
sources, workspace and release (tests/test_layout.py keeps it so)."""
