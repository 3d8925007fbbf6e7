# The connector (and, later, the rerank workers) as an image. CPU-only torch keeps it small; for a GPU image
# drop the first pip line and start from a CUDA base.
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir torch --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY connector ./connector
COPY workers ./workers
COPY mappings ./mappings
RUN pip install --no-cache-dir .
ENTRYPOINT ["hybrid-rerank"]
