"""prep: stream text sources into GPT-2 token shards plus a manifest (`python -m prep`)."""
