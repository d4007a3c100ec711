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


def test_readme_trains_the_safety_adapter_with_its_settings():
    """The README's by-hand command, parsed by the CLI, is the config `make serve` trains
    (`unlearning.demo.safety.safety_config`, the one copy of its settings)."""
    import shlex

    from unlearning.cli import build_parser, train_config
    from unlearning.demo.safety import safety_config

    command = next(b for b in README.split("```") if "python -m unlearning train" in b)
    flags = command.split("python -m unlearning train", 1)[1].split("\npython", 1)[0]
    words = shlex.split(flags.replace("\\\n", " "), comments=True)
    readme = train_config(build_parser().parse_args(["train", *words]))
    assert readme == safety_config(Path("$model"), Path("$model-adapters/safety"), seed=0)
