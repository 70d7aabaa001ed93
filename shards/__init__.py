"""shards: the on-disk token-shard format, its writer and reader, and the reviewer's tools."""
