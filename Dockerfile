# layer2-relay and the tester in one image.
# Build:  docker build -t layer2-relay .
# Run:    docker run -p 7777:7777 -v layer2-data:/var/lib/layer2/data layer2-relay

# --- build stage: compile both binaries in release mode -------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# secp256k1 compiles C: gcc and libc headers come with the rust image.
COPY . .
RUN cargo build --release --locked -p layer2-relay -p tester \
 && install -m 0755 target/release/layer2-relay target/release/tester /usr/local/bin/

# --- run stage: a slim base, a non-root user ------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/layer2 layer2 \
 && mkdir -p /var/lib/layer2/data && chown layer2:layer2 /var/lib/layer2/data
COPY --from=build /usr/local/bin/layer2-relay /usr/local/bin/tester /usr/local/bin/
USER layer2
WORKDIR /var/lib/layer2
# Inside a container the relay listens on every interface; data lives in a volume.
ENV LAYER2_LISTEN=0.0.0.0:7777 \
    LAYER2_DATA_DIR=/var/lib/layer2/data \
    RUST_LOG=info
VOLUME ["/var/lib/layer2/data"]
EXPOSE 7777
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=5 \
  CMD curl -fsS http://127.0.0.1:7777/health || exit 1
# SIGTERM (docker stop) shuts the relay down gracefully.
STOPSIGNAL SIGTERM
ENTRYPOINT ["layer2-relay"]
CMD ["serve"]
