"""`python -m mora_agents` is the `mora` command."""

from mora_agents.cli import main

main()
