"""README documents every setting and the two commands CI and newcomers rely on."""

from pathlib import Path

from service.settings import ServiceSettings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [f"CROSSGUARD_{name.upper()}" for name in ServiceSettings.model_fields
               if f"`CROSSGUARD_{name.upper()}`" not in README]
    assert not missing, f"README lacks {missing}"


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make serve" in first_block and "make test" in first_block
