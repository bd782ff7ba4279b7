"""The documentation cannot drift from the code: every setting is documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from eventfold.domain.limits import Limits
from eventfold.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).parent.parent


def test_every_setting_is_documented_with_its_default() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    settings = Settings()
    for owner, fields in (
        (settings, dataclasses.fields(Settings)),
        (settings.limits, dataclasses.fields(Limits)),
    ):
        for field in fields:
            if field.name == "limits":
                continue
            variable = f"`{ENV_PREFIX}{field.name.upper()}`"
            assert variable in text, f"{variable} is missing from docs/configuration.md"
            row = next(line for line in text.splitlines() if line.startswith(f"| {variable}"))
            assert f"`{getattr(owner, field.name)}`" in row, f"default of {variable} differs"


def test_readme_names_the_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/serve" in readme
    assert "scripts/test" in readme
    assert "scripts/test" in ci
