# Warden worker image: the package and its dependencies, no embedded broker (production uses real Kafka).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY warden ./warden
COPY streams ./streams
COPY responders ./responders
COPY playbooks ./playbooks
RUN pip install --no-cache-dir . && useradd --system warden && mkdir /data && chown warden /data
USER warden
ENV WARDEN_DATA_DIR=/data WARDEN_WEB_BIND=0.0.0.0:6066
EXPOSE 6066
ENTRYPOINT ["warden"]
CMD ["run"]
