# syntax=docker/dockerfile:1
# Multi-stage: build a wheel, install it into a slim runtime image as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sentinel ./sentinel
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/sentinel sentinel \
 && mkdir -p /var/lib/sentinel /etc/sentinel \
 && chown sentinel /var/lib/sentinel
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY rules /etc/sentinel/rules
COPY dashboards /etc/sentinel/dashboards
COPY config.example.yaml /etc/sentinel/config.yaml
# The state DB lives on a volume so the root filesystem can be read-only.
ENV SENTINEL_STATE=/var/lib/sentinel/state.db SENTINEL_LISTEN=0.0.0.0:8080 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
VOLUME ["/var/lib/sentinel"]
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/health/live', timeout=2)" || exit 1
ENTRYPOINT ["sentinel", "run", "-c", "/etc/sentinel/config.yaml", "--log-format", "json"]
