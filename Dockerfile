# netvol's managed-plugin rootfs. Docker builds plugins from a container's
# filesystem:
#   docker build -t netvol-rootfs .
#   id=$(docker create netvol-rootfs true)
#   mkdir -p plugin/rootfs && docker export "$id" | tar -x -C plugin/rootfs
#   cp plugin-config.json plugin/config.json
#   docker plugin create netvol plugin
# `make plugin` builds the same directory without a registry (CI uses it).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static: the rootfs has no libc for netvol; mkfs.ext4 brings its own.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/netvol ./cmd/netvol

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends e2fsprogs \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/netvol /netvol
RUN mkdir -p /run/docker/plugins /mnt/netvol /var/lib/netvol
ENTRYPOINT ["/netvol", "plugin"]
