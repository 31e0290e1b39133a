"""config/: the knob table, parsing the environment and .env, the rules, unknown names."""
