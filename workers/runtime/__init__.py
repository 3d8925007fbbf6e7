"""What runs a model: where it comes from (`models`), how it is driven in batches (`batching`), the torch and
onnxruntime runners (`runners`) and the ONNX export with its cache (`onnx_export`). Torch, transformers and
onnxruntime are imported only inside the functions that need them."""
