# stockpipe as a container image: a static binary on a distroless base,
# running as a non-root user. Build: docker build -t stockpipe .
# The image runs one role per container (process, serve, generate, …);
# `stockpipe up` needs PostgreSQL's server binaries, which this image lacks,
# so run it with --database-url or use docker-compose.yml.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.buildVersion=${VERSION}" -o /out/stockpipe ./cmd/stockpipe

# static-debian12 carries CA certificates (Kafka and PostgreSQL over TLS) and
# nothing to run but the binary; time zones are embedded in it.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/stockpipe /stockpipe
USER 65532:65532
EXPOSE 8050
ENTRYPOINT ["/stockpipe"]
CMD ["--help"]
