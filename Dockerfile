# Multi-stage build: a static broker binary on a distroless, non-root base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/broker ./cmd/broker

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/broker /broker
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/broker"]
CMD ["serve", "--config", "/etc/dpop-broker/config.yaml"]
