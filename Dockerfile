# GPU image: CUDA runtime + the pinned Python stack, `bentoml serve` as a non-root user.
#   docker build -t crossguard .
#   docker run --gpus all -p 3000:3000 -e CROSSGUARD_MODEL=llava-hf/llava-1.5-7b-hf \
#     -e CROSSGUARD_ADAPTERS=safety=/adapters/safety -v $PWD/adapters:/adapters:ro crossguard
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    BENTOML_HOME=/home/crossguard/bentoml \
    BENTOML_DO_NOT_TRACK=True \
    HF_HOME=/home/crossguard/hf \
    CROSSGUARD_HOME=/home/crossguard/crossguard \
    CROSSGUARD_DEVICE=auto \
    CROSSGUARD_DTYPE=auto \
    CROSSGUARD_CPU_THREADS=0

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV" \
    && useradd --create-home --uid 10001 crossguard

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY unlearning ./unlearning
# On Linux x86_64, PyPI's torch==2.13.0 is the CUDA build; torchvision enables the Qwen2-VL and
# SmolVLM processors.
RUN pip install --upgrade pip \
    && pip install . torchvision==0.28.0

USER crossguard
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD curl -fsS http://127.0.0.1:3000/readyz || exit 1
CMD ["bentoml", "serve", "service.app:CrossGuard", "--host", "0.0.0.0", "--port", "3000"]
