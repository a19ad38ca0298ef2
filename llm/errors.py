"""Error types whose message is the one line a user sees: it names the file, line or key at fault."""


class LLMError(Exception):
    """Base class: scripts print `error: <message>` and exit with status 2, no traceback."""


class ConfigError(LLMError):
    """A config file or override is wrong: unknown key, wrong type, missing file."""


class DataError(LLMError):
    """A data file is missing or malformed; the message names the file and, where known, the line."""


class CheckpointError(LLMError):
    """A checkpoint is missing, incomplete or fails its manifest check."""


class TrainingError(LLMError):
    """Training cannot go on: too many non-finite losses, a guardrail fired, a save failed."""
