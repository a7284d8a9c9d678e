"""Planning: presets, the matching search, plans and the sweep files they become. Imports
matcher.cost and matcher's top level (config, errors, names, fmt); never run/ or report/."""
