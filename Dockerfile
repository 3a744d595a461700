# repro in a container: installs the project (CPU torch) and runs the demo.
# Not built in CI (no Docker engine there); kept minimal so it is obviously correct.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git make && rm -rf /var/lib/apt/lists/*
WORKDIR /repro
COPY . .
RUN python -m pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && python -m pip install --no-cache-dir -e ".[dev]"
# make demo uses .venv; inside the image the system interpreter already has everything
CMD ["sh", "-c", "repro stage overfit --paper bimpm && repro stage full --paper bimpm; repro status --paper bimpm"]
