# The runtime API as a container image: a static-ish Rust binary on distroless (glibc, CA
# certificates, no shell, non-root). Build from the repository root:
#
#   docker build -t ghcr.io/openhands/runtime-api:0.1.0 .
#
# BuildKit is needed for the cache mounts (Docker >= 23 uses it by default); its bundled Dockerfile
# frontend reads them, so there is no `# syntax=` line (that would fetch a frontend image first).
# The test suite builds this file with BuildKit alone: `scripts/images.sh build runtime-api`.

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# Only what the binary is built from (tests, benches and scripts are not needed).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin runtime-api \
    && install -m 0755 target/release/runtime-api /runtime-api

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /runtime-api /runtime-api
USER 65532:65532
EXPOSE 8080
ENV BIND_ADDRESS=0.0.0.0 BACKEND=kubernetes
ENTRYPOINT ["/runtime-api"]
