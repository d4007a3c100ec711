# GPU image: CUDA runtime + the pinned Python stack, `bentoml serve` as a non-root user.
#   docker build -t crossguard .                              # the torch engine
#   docker build --build-arg ENGINE=vllm -t crossguard-vllm .  # vLLM (README "Engines")
#   docker run --gpus all -p 3000:3000 -e CROSSGUARD_MODEL=llava-hf/llava-1.5-7b-hf \
#     -e CROSSGUARD_ADAPTERS=safety=/adapters/safety -v $PWD/adapters:/adapters:ro crossguard
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG ENGINE=torch

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
    CROSSGUARD_CPU_THREADS=0 \
    CROSSGUARD_ENGINE=$ENGINE

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV" \
    && useradd --create-home --uid 10001 crossguard

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY unlearning ./unlearning
COPY deploy/vllm/requirements.py ./deploy/vllm/requirements.py
# On Linux x86_64, PyPI's torch==2.13.0 is the CUDA build; torchvision enables the Qwen2-VL and
# SmolVLM processors. vLLM pins an older transformers: ENGINE=vllm takes vLLM's and the
# project's other pins (deploy/vllm/requirements.py), then the project without dependencies.
RUN pip install --upgrade pip \
    && if [ "$ENGINE" = vllm ]; then \
         python3 deploy/vllm/requirements.py --gpu --no-test > /tmp/requirements.txt \
         && pip install -r /tmp/requirements.txt && pip install --no-deps . ; \
       else pip install . torchvision==0.28.0 ; fi

USER crossguard
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD curl -fsS http://127.0.0.1:3000/readyz || exit 1
CMD ["bentoml", "serve", "service.app:CrossGuard", "--host", "0.0.0.0", "--port", "3000"]
