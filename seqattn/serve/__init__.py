"""HTTP API and web page: FastAPI app with dynamic batching (`seqattn serve MODEL_DIR`)."""
