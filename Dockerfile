# Multi-stage build: the SQL parser (pg_query_go) is C, so the build stage needs cgo.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -trimpath \
      -ldflags "-s -w -X github.com/pgtripwire/pgtripwire/detector/buildinfo.Version=${VERSION}" \
      -o /out/pgtripwire ./cmd/pgtripwire

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/pgtripwire --create-home pgtripwire
COPY --from=build /out/pgtripwire /usr/local/bin/pgtripwire
USER pgtripwire
WORKDIR /var/lib/pgtripwire
EXPOSE 9473
ENTRYPOINT ["/usr/local/bin/pgtripwire"]
CMD ["run", "--config", "/etc/pgtripwire/pgtripwire.yaml"]
