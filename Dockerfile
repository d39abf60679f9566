# syntax=docker/dockerfile:1
#
# pmon in a container. Two stages: a Rust builder (rust:bookworm) that compiles the one
# `pmon` binary, and a small runtime (debian:bookworm-slim) that runs it as the non-root
# user `pmon`, a member of a group `i2c` whose id matches the host's (I2C_GID).
#
#   docker build -t pmon .                                   # for this machine
#   docker buildx build --platform linux/arm64 -t pmon .     # for a Pi with a 64-bit OS
#   docker buildx build --platform linux/arm/v7 -t pmon .    # for a Pi with a 32-bit OS
#   docker run --rm pmon --help
#   docker run --rm pmon up --sim 8                          # no boards: simulated circuits
#
# Built with BuildKit (the default since Docker 23; with Debian's docker.io set
# DOCKER_BUILDKIT=1), a build for another architecture cross-compiles on the build host's
# own CPU instead of emulating the target's, which takes minutes instead of an hour.

ARG RUST_IMAGE=rust:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS builder
# Set by BuildKit: the platform the image is for (empty with the legacy builder: native).
ARG TARGETARCH
ARG TARGETVARIANT
WORKDIR /src
# Pick the Rust target and, when it is not the build host's, install its cross toolchain.
# rusqlite and zstd compile C code, so the C cross compiler is needed as well as the linker.
RUN set -eux; \
    arch="${TARGETARCH:-$(dpkg --print-architecture)}${TARGETVARIANT}"; \
    case "$arch" in \
      amd64*) target=x86_64-unknown-linux-gnu; gnu=x86-64-linux-gnu; deb=amd64 ;; \
      arm64*) target=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu; deb=arm64 ;; \
      armv7|armhf|arm) target=armv7-unknown-linux-gnueabihf; gnu=arm-linux-gnueabihf; deb=armhf ;; \
      *) echo "pmon: no build recipe for platform $arch" >&2; exit 1 ;; \
    esac; \
    echo "$target" > /rust-target; \
    if [ "$(dpkg --print-architecture)" != "$deb" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends "gcc-$gnu" "libc6-dev-$deb-cross"; \
      rm -rf /var/lib/apt/lists/*; \
      rustup target add "$target"; \
      upper="$(echo "$target" | tr 'a-z-' 'A-Z_')"; \
      lower="$(echo "$target" | tr '-' '_')"; \
      { echo "export CARGO_TARGET_${upper}_LINKER=$gnu-gcc"; \
        echo "export CC_${lower}=$gnu-gcc"; \
        echo "export AR_${lower}=$gnu-ar"; } > /cross-env; \
    else \
      : > /cross-env; \
    fi
COPY . .
RUN set -eux; \
    . /cross-env; \
    target="$(cat /rust-target)"; \
    cargo build --release --locked -p pmon --target "$target"; \
    install -D -m 0755 "target/$target/release/pmon" /out/pmon

FROM ${RUNTIME_IMAGE}
# The host's i2c group id (Raspberry Pi OS: 998; `getent group i2c`). docker-compose.yml also
# adds it at run time with group_add, so a mismatch here is corrected there.
ARG I2C_GID=998
ARG PMON_UID=10001
RUN set -eux; \
    groupadd --system --gid "$I2C_GID" i2c; \
    groupadd --system --gid "$PMON_UID" pmon; \
    useradd --system --uid "$PMON_UID" --gid pmon --groups i2c \
      --home-dir /var/lib/pmon --no-create-home --shell /usr/sbin/nologin pmon; \
    install -d -o pmon -g pmon -m 0750 /var/lib/pmon; \
    install -d -m 0755 /etc/pmon
COPY --from=builder /out/pmon /usr/local/bin/pmon
# The default configuration: the broker on every interface, one bus /dev/i2c-1. Mount your
# own over it (docker-compose.yml mounts deploy/pmon.toml); `pmon up --sim 8` needs no bus.
COPY deploy/pmon.toml /etc/pmon/pmon.toml
ENV PMON_CONFIG=/etc/pmon/pmon.toml \
    PMON_DATA_DIR=/var/lib/pmon \
    RUST_LOG=info,rumqttd=off
VOLUME ["/var/lib/pmon"]
WORKDIR /var/lib/pmon
USER pmon
# MQTT (pmon broker / pmon up), web UI (pmon web), historian API (pmon historian).
EXPOSE 1883 8080 8081
# Healthy while the broker this container uses accepts an MQTT session (`pmon doctor` prints
# nothing then; its report otherwise, which `docker inspect` shows).
HEALTHCHECK --interval=60s --timeout=10s --start-period=20s --retries=3 \
  CMD ["pmon", "doctor", "--only", "broker", "--quiet"]
ENTRYPOINT ["pmon"]
CMD ["up"]
