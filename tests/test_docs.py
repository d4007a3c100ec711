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


def test_demo_safety_settings_agree_in_makefile_readme_and_cost_bench():
    """The Makefile's SAFETY_ARGS are the documented settings: the README's by-hand command and
    the cost bench's defaults must train the same adapter."""
    import re

    from bench.unlearning_cost import DEFAULT_TRAIN_FLAGS

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    safety = _flags(re.search(r"^SAFETY_ARGS \?= (.*?)\n(?!\s)", makefile, re.S | re.M)[1])
    command = next(b for b in README.split("```") if "python -m unlearning train" in b)
    readme = _flags(command.split("python -m unlearning train", 1)[1].split("\npython", 1)[0])
    assert safety.items() <= readme.items()
    assert _flags(" ".join(DEFAULT_TRAIN_FLAGS)).items() <= safety.items()
