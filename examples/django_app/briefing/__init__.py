"""A Django app whose view runs an agent, watched by agents-watchdog."""
