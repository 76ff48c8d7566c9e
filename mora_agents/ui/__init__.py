"""Ways for people to work with the agents: the terminal (run display, review prompts, chat)."""
