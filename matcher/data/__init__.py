"""Training and evaluation data: the character tokenizer, the embedded math task, token shards on
disk and GSM8K-style JSONL eval sets. No torch here; the training loop turns rows into tensors."""
