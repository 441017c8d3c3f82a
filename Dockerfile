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
RUN useradd --system --uid 10001 cmlmon
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER cmlmon
ENV LOG_FORMAT=json PYTHONUNBUFFERED=1
CMD ["python", "-m", "registry"]
