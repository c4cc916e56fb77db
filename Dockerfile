# Multi-stage build: a static broker binary on a distroless, non-root base.
# The Go of go.mod (pin a digest, golang:1.26.8@sha256:…, for reproducible images).
FROM golang:1.26.8 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# What `broker version` and dpop_broker_build_info report (package buildinfo). The context has
# no .git (.dockerignore), so pass them: `make image` does, as
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     --build-arg COMMIT="$(git rev-parse HEAD)" --build-arg BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
# Left empty, the binary reports "(devel)" and "unknown".
ARG VERSION=""
ARG COMMIT=""
ARG BUILD_DATE=""
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags="-s -w -X github.com/dpop-broker/dpop-broker/buildinfo.version=${VERSION} -X github.com/dpop-broker/dpop-broker/buildinfo.commit=${COMMIT} -X github.com/dpop-broker/dpop-broker/buildinfo.buildDate=${BUILD_DATE}" \
      -o /out/broker ./cmd/broker

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/broker /broker
USER nonroot:nonroot
# Inside a container the broker must listen on every interface: loopback is unreachable from
# outside (docker run -p 8080:8080 forwards to the container's own address). BROKER_LISTEN
# overrides the configuration's listen; the code default outside containers is 127.0.0.1:8080.
ENV BROKER_LISTEN=0.0.0.0:8080
EXPOSE 8080
# No shell or curl on distroless: the binary probes itself (GET /healthz on BROKER_LISTEN).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/broker", "healthcheck"]
ENTRYPOINT ["/broker"]
CMD ["serve", "--config", "/etc/dpop-broker/config.yaml"]
