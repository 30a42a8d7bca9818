"""The model side: base models (M0), the model folder, chat prompts, LoRA training, merging,
quantized exports and model cards."""
