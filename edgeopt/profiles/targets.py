"""A run's ``--target`` list resolved to profiles once, at its entry point, and handed down.

Everything downstream of the entry (setup, the workers, each trial process, the final
re-measure) uses these profiles, never the files again: a profile file edited while a run goes
on changes nothing in it. Trial processes get the profiles' TOML text (``texts``), not paths.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from edgeopt.errors import ConfigError
from edgeopt.profiles.loader import load_profile, profile_from_text
from edgeopt.profiles.merge import flavour_note, merge_profiles
from edgeopt.profiles.runtime_spec import RUNTIMES, Runtime, convertible, require_installed
from edgeopt.profiles.schema import HardwareProfile


@dataclass(frozen=True)
class Targets:
    """The run's target profiles, in ``--target`` order."""

    profiles: tuple[HardwareProfile, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.profiles)

    @cached_property
    def merged(self) -> HardwareProfile:
        """The profile candidates are suggested for (``merge_profiles``): every target must
        run them. Raises ConfigError when the targets share no model format."""
        return merge_profiles(list(self.profiles))

    @property
    def flavour_note(self) -> str | None:
        """A warning when the targets want different int8 flavours (``flavour_note``)."""
        return flavour_note(self.profiles)

    @property
    def texts(self) -> tuple[str, ...]:
        """Each profile's TOML text, for a trial process (``from_texts``)."""
        return tuple(p.text for p in self.profiles)

    def digests(self) -> dict[str, str]:
        """``{profile name: SHA-256 of its TOML text}``: what ``RunConfig.profile_digests``
        records, so a resume whose profile file changed is refused."""
        return {p.name: hashlib.sha256(p.text.encode()).hexdigest() for p in self.profiles}

    def check(self) -> None:
        """ConfigError when the targets share no model format or name one profile twice."""
        _ = self.merged
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"--target names a profile twice: {', '.join(self.names)}")

    def check_searchable(self) -> None:
        """ConfigError for a measured target whose runtime edgeopt cannot convert to here or
        that is not installed (the search times each candidate in the target's own runtime),
        and for a LiteRT target, measured or not, without LiteRT installed (the search makes
        each candidate's ``.tflite`` for it)."""
        for p in self.profiles:
            if p.runtime_name == Runtime.ORT:
                continue
            if p.measured:
                convertible(p.runtime_name)
            if p.measured or RUNTIMES[p.runtime_name].needs_torch:
                require_installed(p.runtime_name)

    def check_unchanged(self, recorded: dict[str, str] | None) -> None:
        """ConfigError when these profiles are not the content a run recorded (its
        ``profile_digests``; None for a run from before they were recorded)."""
        error = profiles_changed(recorded, self.digests())
        if error is not None:
            raise error

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> Targets:
        """The profiles a run handed a trial process (``texts``)."""
        return cls(
            tuple(profile_from_text(t, f"the run's profile {i + 1}") for i, t in enumerate(texts))
        )


def profiles_changed(
    recorded: Mapping[str, str] | None, digests: Mapping[str, str]
) -> ConfigError | None:
    """The error for a resume whose profile files changed since the run started: the
    profiles in ``digests`` (``Targets.digests``) whose digest differs from the one the
    run ``recorded``; None when none does (or the run recorded no digests)."""
    before = recorded or {}
    changed = [name for name, digest in digests.items() if before.get(name, digest) != digest]
    if not changed:
        return None
    return ConfigError(
        f"profile {', '.join(changed)} is not the file this run started with (its content "
        "changed): resuming would mix the numbers of two profiles in one front",
        hint="start a new run with another --out directory, or restore the profile file",
    )


def resolve_targets(specs: Sequence[str]) -> Targets:
    """Each ``--target`` (a name, an alias or a ``.toml`` path) resolved to its profile.

    Called once per process at an entry point; raises ConfigError for an unknown target."""
    return Targets(tuple(load_profile(s) for s in specs))
