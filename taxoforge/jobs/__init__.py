"""The job: its record and KV (store), its lifecycle as named transitions, and its progress."""
