# One image for every role: signet server, agent, csi and helper.
#   docker build -t ghcr.io/signetid/signet:latest .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Pure Go (SQLite included), so the binary runs on any base.
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/signet ./cmd/signet

# Debian slim rather than distroless: the CSI driver mounts through
# k8s.io/mount-utils, which runs mount(8) and umount(8) from util-linux.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends util-linux ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/signet /usr/local/bin/signet
ENTRYPOINT ["/usr/local/bin/signet"]
