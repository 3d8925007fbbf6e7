# The connector and the rerank workers (`celery -A hybrid_rerank.workers worker`) as one image. CPU-only
# torch keeps it small; for a GPU image drop the first pip line and start from a CUDA base.
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir torch --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY connector ./connector
COPY workers ./workers
COPY mappings ./mappings
# The core serves search and the workers; `--build-arg EXTRAS=[lab]` adds eval, bench, training and the demo.
ARG EXTRAS=""
RUN pip install --no-cache-dir ".${EXTRAS}"
ENTRYPOINT ["hybrid-rerank"]
