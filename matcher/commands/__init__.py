"""The CLI subcommands, one module each: a command's options and help text where matcher.cli does not
declare them inline (`plan`'s: one per PlanRequest field), printing with matcher.console, the work in
plan/, run/, report/ and cost/. Imports everything below it; nothing imports it but matcher.cli."""
