"""Paper-trading daemon and its durable state."""
