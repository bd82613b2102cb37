"""User-facing error types: the CLI turns these into one line and exit code 2, no traceback."""


class PvnasError(Exception):
    """Base class of errors caused by user input (paths, specs, configs, files)."""


class ConfigError(PvnasError, ValueError):
    """An impossible or unknown configuration (preset, dataset spec, option value)."""


class GenotypeError(PvnasError, ValueError):
    """A genotype file or object that breaks a rule of docs/design.md §3."""


class DataError(PvnasError):
    """A dataset that cannot be used: missing files, unknown labels, nothing readable."""
