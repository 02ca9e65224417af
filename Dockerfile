FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -o /out/dcroll ./cmd/dcroll

FROM debian:bookworm-slim
COPY --from=build /out/dcroll /usr/local/bin/dcroll
ENTRYPOINT []
