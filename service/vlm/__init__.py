"""Model runtime: loading a VLM and its LoRA adapters, building prompts, generating."""
