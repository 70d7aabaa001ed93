"""`python -m prep.bench`: prep's speed and memory, side by side with its baselines (see
`prep.bench.__main__`)."""
