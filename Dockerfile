# The dcroll image used by docker-compose.yml: the dcroll binary, plus the
# example service built by examples/build.sh (hello-v1, -v2, -v3 and their
# .tar.gz) and the example specs in /usr/local/share/dcroll/examples, which
# the compose file's publish-and-push service publishes and pushes.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/dcroll ./cmd/dcroll
RUN ./examples/build.sh /out/examples && \
	mkdir -p /out/examples/specs && cp examples/specs/*.yaml /out/examples/specs/

FROM debian:bookworm-slim
COPY --from=build /out/dcroll /usr/local/bin/dcroll
COPY --from=build /out/examples /usr/local/share/dcroll/examples
ENTRYPOINT []
