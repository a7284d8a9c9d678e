"""Planning: presets, the matching search, plans and the sweep files they become. Imports
matcher.cost, matcher.data and matcher.eval (the data and eval-fit checks a sweep passes before it is
written) and matcher's top level (config, errors, names, fmt); never run/ or report/."""
