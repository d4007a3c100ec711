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


def _flags(text: str) -> dict[str, str]:
    """`--flag value` pairs of a shell command line (continuations and comments removed)."""
    import itertools
    import shlex

    words = shlex.split(text.replace("\\\n", " "), comments=True)
    return {w: v for w, v in itertools.pairwise(words)
            if w.startswith("--") and not v.startswith("--")}


def test_readme_trains_the_safety_adapter_with_its_settings():
    """The README's by-hand command trains the adapter `make serve` trains
    (`unlearning.demo.safety.SAFETY_ARGS`, the one copy of its settings)."""
    import shlex

    from unlearning.demo.safety import SAFETY_ARGS

    command = next(b for b in README.split("```") if "python -m unlearning train" in b)
    readme = _flags(command.split("python -m unlearning train", 1)[1].split("\npython", 1)[0])
    assert _flags(shlex.join(SAFETY_ARGS)).items() <= readme.items()
