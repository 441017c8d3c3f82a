# One image for every cmlmon service; the command picks the service (python -m registry|collector|notifier).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml ./
COPY protos ./protos
COPY scripts ./scripts
COPY libs ./libs
COPY services ./services
RUN pip install --no-cache-dir grpcio-tools==1.85.1 mypy-protobuf==5.1.0 \
 && python scripts/gen_protos.py \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 cmlmon && useradd --system --uid 10001 --gid 10001 --no-create-home cmlmon
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# Numeric, so that Kubernetes' runAsNonRoot can verify it; nothing is written at run time (bytecode was
# compiled at install), so the root filesystem can be read-only.
USER 10001:10001
ENV LOG_FORMAT=json PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
CMD ["python", "-m", "registry"]
