"""train: nanoGPT-style GPT-2 mixture-of-experts training on the shards."""
