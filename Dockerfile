# syntax=docker/dockerfile:1
# The leen-operator image: a release build, run as non-root on distroless.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The workspace names the fake Leen crate and the manifest declares the benchmark: cargo
# reads both to load the workspace; neither is built into the image.
COPY fake-leen ./fake-leen
COPY benches ./benches
RUN cargo build --release --locked --bin leen-operator \
 && strip target/release/leen-operator

# distroless/cc: glibc and CA certificates (Leen is reached over https), nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/leen-operator /leen-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/leen-operator"]
CMD ["run"]
