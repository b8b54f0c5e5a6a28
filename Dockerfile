FROM python:3.11-slim
# procps: pgrep, for the worker's health check
RUN apt-get update && apt-get install -y --no-install-recommends procps \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
# Editable, so the server finds web/ beside its package.
RUN pip install --no-cache-dir -c constraints.txt -e .
EXPOSE 8000
CMD ["flywheel", "serve", "--host", "0.0.0.0"]
