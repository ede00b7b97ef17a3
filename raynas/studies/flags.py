"""The count checks every experiment script makes on its flags before Ray starts and before anything trains.

A count below its minimum is refused with one line naming the flag: ``range(-1)`` is empty, so a negative
``--seeds`` or ``--random-archs`` would otherwise run nothing and write a table with rows missing, and a
negative ``--epochs`` would only fail once Ray is up or a super-net has trained.
"""

from __future__ import annotations

from raynas.config import ConfigError


def check_counts(args: object, minimums: dict[str, int], fields: dict[str, str] | None = None) -> None:
    """Refuse each flag of ``minimums`` (its ``argparse`` name, an attribute of ``args``: parsed flags or a
    job's dataclass) below its minimum; ``None`` (a flag left out, whose default is decided later) passes.
    ``fields`` names the config value a flag sets, so the message says both where the flag feeds a config."""
    for name, least in minimums.items():
        value = getattr(args, name)
        if value is None or value >= least:
            continue
        flag = "--" + name.replace("_", "-")
        what = f"{flag}: {fields[name]}" if fields and name in fields else flag
        raise ConfigError(f"{what} must be >= {least}, got {value}; give {flag} {least} or more")
