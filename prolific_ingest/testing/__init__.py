"""Test helpers: the Prolific API emulator, archive generator and pytest plugin."""
