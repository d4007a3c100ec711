"""`python -m unlearning` and `accelerate launch -m unlearning`: see `unlearning.cli`."""

from unlearning.cli import main

main()
