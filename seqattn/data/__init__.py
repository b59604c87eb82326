"""Text in, token-id batches out: corpus reading, SentencePiece, batching, data sets."""
