# The demo application: hayscope's instrumented RAG demo, sending spans to the collector.
FROM python:3.11-slim
WORKDIR /app
# torch first, from PyTorch's CPU index: PyPI's default build brings several GB of CUDA libraries.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY sdk ./sdk
RUN pip install --no-cache-dir '.[demo]'
ENV HAYSTACK_TELEMETRY_ENABLED=False HF_HUB_OFFLINE=1
EXPOSE 9464
CMD ["hayscope", "demo", "--forever", "--runs", "24", "--concurrency", "8"]
