"""The lab: evaluation, metrics, training, benchmarks and the demo, with the demo's data. An optional extra
(`pip install 'hybrid-rerank[lab]'`: matplotlib for charts, datasets and accelerate for training); the search
core never imports it. Its tools call the pipeline's stage functions (`connector.stages`) instead of
re-implementing recall, fusion, reranking or interpolation."""
