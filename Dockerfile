# The one ratchet image: Kubeflow components, the decision service (`ratchet serve`)
# and the controller (`ratchet controller`) all run in it.
#
#   docker build -t "$(python -c 'from components.image import RATCHET_IMAGE; print(RATCHET_IMAGE)')" .
#
# components/image.py (RATCHET_IMAGE) is the one place that names the image and its tag;
# the kustomize overlays refer to the same name with `images:`.
#
# Pinned: an exact Python patch release on Debian bookworm, and every Python package by
# constraints.txt. Java 17 is there for Spark (pyspark 4 needs Java 17 or 21).
FROM python:3.11.11-slim-bookworm

# libgomp1: XGBoost's OpenMP runtime (not in slim images).
# procps: Spark's launch scripts call `ps`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless libgomp1 procps \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    SPARK_LOCAL_IP=127.0.0.1

# The venv comes first on PATH, so `python3` there is the one kfp's executor runs
# (`python3 -m kfp.dsl.executor_main`), with kfp and ratchet installed.
RUN python3 -m venv $VIRTUAL_ENV

WORKDIR /app

# Dependencies first, in their own layer: a code change must not reinstall pyspark.
# Empty package stubs let pip resolve the project's dependencies from pyproject.toml.
COPY pyproject.toml constraints.txt ./
RUN mkdir -p ratchet components pipelines \
    && touch ratchet/__init__.py components/__init__.py pipelines/__init__.py \
    && pip install -c constraints.txt . \
    && pip uninstall -y ratchet \
    && rm -rf ratchet components pipelines build *.egg-info

COPY ratchet/ ratchet/
COPY components/ components/
COPY pipelines/ pipelines/
COPY specs/ specs/
COPY contracts/ contracts/
RUN pip install --no-deps -c constraints.txt . \
    && rm -rf build *.egg-info

# The slice engine's numba kernels, compiled once here instead of in every pipeline pod
# (about 7 s). numba only uses a cache folder it can write to, so the folder is handed to
# the non-root user below. Pods with a read-only root filesystem (the decision service)
# fall back to $HOME/.cache and compile their own kernels (the compiled trees) at start.
ENV NUMBA_CACHE_DIR=/opt/numba-cache
RUN python -m ratchet.evaluate.metrics

# Non-root. The KFP launcher writes input artifacts under /gcs, /minio and /s3 (older
# KFP backends do not mount scratch volumes there), so those belong to the user too.
RUN groupadd --gid 10001 ratchet \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/ratchet --shell /usr/sbin/nologin ratchet \
    && mkdir -p /gcs /minio /s3 /var/lib/ratchet \
    && chown 10001:10001 /gcs /minio /s3 /var/lib/ratchet \
    && chown -R 10001:10001 /opt/numba-cache
USER 10001:10001

# The decision service listens here (`ratchet serve --port 8080`).
EXPOSE 8080

ENTRYPOINT ["ratchet"]
CMD ["--help"]
