"""Where models come from: the bundled default, a folder, the Hugging Face cache, ONNX."""
