"""pytest plugin (entry point ``prolific_ingest``): the ``prolific_emulator`` fixture."""
