"""One module per command, named after it: NAME, HELP, add_arguments(parser) for its
flags, and run(args) -> exit code. The grammar (jailbake.cli.grammar) lists them in
COMMANDS, in the order --help shows them."""
