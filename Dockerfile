# repro in a container: the BiMPM demo (overfit, then full) on CPU torch; exits with the gates' code.
#   docker build -t repro .                                                      CPU (~200 MB torch)
#   docker build -t repro:cuda --build-arg TORCH_INDEX=https://pypi.org/simple .  CUDA (~2.75 GB)
#   docker run --rm -v repro-runs:/repro/runs repro                              runs/ is a volume
#   docker run --rm --gpus all -v repro-runs:/repro/runs repro:cuda
#   docker run --rm -v repro-runs:/repro/runs repro repro log                    any repro command
# No Docker engine on our machines: not built in CI; `make lint` checks this file with hadolint.
FROM python:3.11-slim

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

# torch first, alone: this layer changes only with these two args. PyTorch's CPU index by default;
# PyPI's torch is the CUDA build (its nvidia wheels carry CUDA: the host needs only the driver).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION" \
    && python -c 'import torch; print("torch", torch.__version__, "CUDA build:", torch.version.cuda)'

# then the other dependencies, read from pyproject.toml alone, so a source edit keeps this layer
WORKDIR /repro
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && useradd --create-home --uid 1000 --user-group repro

# then repro itself (no dev extras) and the project it runs: conf/, papers/bimpm/, notes/
COPY --chown=1000:1000 . .
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build repro.egg-info \
    && mkdir -p runs .cache \
    && chown 1000:1000 . runs .cache

USER 1000:1000
# The run records (runs/<paper>/<stage>/<run-id>/) outlive the container in this volume.
VOLUME ["/repro/runs"]
# the demo gates, then the status table; exits with the gates' code and passes docker stop on to them
CMD ["scripts/docker-demo.sh", "bimpm"]
