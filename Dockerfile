# syntax=docker/dockerfile:1
#
# One image for all four functions: /usr/local/bin/{auth,gateway,converter,notification}
# (+ eventing-runner, the local stand-in for the RabbitMQ broker; never deployed). Each Knative
# Service picks its binary with `command`. Why one image: the functions share almost all of
# their dependencies (tokio, axum, the mongodb driver, rustls, the runtime crate), so one
# `cargo build` compiles them once and the four binaries share one set of layers; there is one
# base image and one set of FFmpeg libraries to patch and scan for CVEs; the binaries cannot
# drift apart in dependency versions (one Cargo.lock, one build); and a node that pulled the
# image for one function already has it for the other three (faster cold starts).
#
#   docker build -t registry.example.com/vidmp3:0.1.0 .
#   docker run --rm registry.example.com/vidmp3:0.1.0 auth --help
#
# Dependencies are cached with cargo-chef: the `cook` layer depends only on the Cargo.toml files
# and Cargo.lock, so a change to the sources rebuilds the workspace crates, not the ~400 deps.

ARG RUST_VERSION=1.95

# --- toolchain + FFmpeg headers (ffmpeg-next 9 builds against Debian 12's FFmpeg 5.1) -------
FROM rust:${RUST_VERSION}-bookworm AS chef
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      clang pkg-config \
      libavcodec-dev libavformat-dev libavutil-dev libswresample-dev \
      libavfilter-dev libavdevice-dev libswscale-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.72
WORKDIR /src

# --- the dependency recipe: changes only when a manifest or the lockfile changes -----------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- build ----------------------------------------------------------------------------------
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# sqlx's query! macros (if any) must not need a database at build time: they use .sqlx/.
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked \
      --bin auth --bin gateway --bin converter --bin notification --bin eventing-runner \
 && mkdir -p /out \
 && cp target/release/auth target/release/gateway target/release/converter \
       target/release/notification target/release/eventing-runner /out/

# --- runtime: Debian 12 slim + the FFmpeg 5.1 shared libraries the converter links ----------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates \
      libavcodec59 libavformat59 libavutil57 libswresample4 libmp3lame0 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 vidmp3 \
 && useradd --system --uid 65532 --gid 65532 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin vidmp3
COPY --from=builder /out/ /usr/local/bin/
# Fail the build, not the first cold start, if a shared library is missing.
RUN set -e; for b in /usr/local/bin/auth /usr/local/bin/gateway /usr/local/bin/converter \
      /usr/local/bin/notification /usr/local/bin/eventing-runner; do \
      if ldd "$b" | grep -q 'not found'; then ldd "$b"; exit 1; fi; \
    done
ENV RUST_LOG=info \
    LOG_FORMAT=json
# Knative sets PORT (the functions default to 8080); /tmp is an emptyDir in the manifests,
# which run with a read-only root filesystem.
EXPOSE 8080
USER 65532:65532
WORKDIR /tmp
# No ENTRYPOINT: every manifest sets `command` to one of the binaries, and
# `docker run IMAGE gateway` works because /usr/local/bin is on PATH.
CMD ["sh", "-c", "echo 'usage: docker run IMAGE auth|gateway|converter|notification|eventing-runner [ARGS]' >&2; exit 64"]
