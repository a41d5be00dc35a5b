"""Typed errors. Library code raises these; the CLI turns them into one-line messages."""

from __future__ import annotations


class TitokError(Exception):
    """Base class: every error the library raises on purpose.

    `exit_code` is what the command line exits with: 1 for a failure (bad file, missing weights),
    2 for a usage error (a flag, name or combination the user can fix by typing something else).
    """

    exit_code = 1


class UsageError(TitokError):
    """Flags or arguments that are out of range or contradict each other."""

    exit_code = 2


class ConfigError(TitokError):
    """A config.json or preset that cannot describe a TiTok model."""


class UnknownModelError(UsageError):
    """A model name that is neither a preset, a local path nor a Hub repo id (a usage error, exit 2)."""


class CheckpointError(TitokError):
    """Weights that are missing, truncated, unsafe, or do not fit the architecture."""


class HubError(TitokError):
    """The Hugging Face Hub could not provide a file (offline, missing, no access)."""


class ImageError(TitokError):
    """An input image that cannot be read or decoded."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class TokenFileError(TitokError):
    """A token file (or its manifest) that is malformed or does not fit the model."""


class FeatureWeightsError(CheckpointError):
    """A feature network's weight file (FID Inception, LPIPS VGG) that is absent and cannot be fetched."""
