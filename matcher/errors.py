"""Errors a user can cause. The CLI prints their message (one line that says what to do), never a
traceback."""


class MatcherError(Exception):
    """Base class: the message is complete and addressed to the user."""


class ConfigError(MatcherError):
    """A model or training config, a preset name or a sweep file is not valid."""


class MatchError(MatcherError):
    """A target cannot be matched by a variant."""


class DataError(MatcherError):
    """A data file or evaluation set cannot be used."""


class RunError(MatcherError):
    """A run cannot be started or resumed."""


class ResultsError(MatcherError):
    """A results folder cannot be compared (no runs, no baseline, bad targets, no plotting library)."""
