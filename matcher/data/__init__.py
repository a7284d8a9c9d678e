"""Training and evaluation data: tokenizers (the character one, or a Hugging Face tokenizer.json), the
embedded math task, corpora encoded into token shards with a manifest and loss mask (`encode`), the
shards on disk, sampling streams and GSM8K-style JSONL eval sets. No torch here; the training loop
turns rows into tensors."""
