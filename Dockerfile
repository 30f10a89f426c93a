# The demo application: hayscope's instrumented example pipeline, sending spans to the collector.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sdk ./sdk
RUN pip install --no-cache-dir .
ENV HAYSTACK_TELEMETRY_ENABLED=False
EXPOSE 9464
CMD ["hayscope", "demo", "--forever", "--runs", "24", "--concurrency", "8"]
