"""Job configs: one file per job, shared defaults and the variant grammar in common.py."""
