"""The CLI subcommands, one module each: parse nothing, print with matcher.console, call plan/, run/,
report/ and cost/. Imports everything below it; nothing imports it but matcher.cli."""
