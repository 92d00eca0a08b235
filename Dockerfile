# syntax=docker/dockerfile:1
# Multi-stage build: a static fhirload binary on a distroless base, non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=""
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/fhirload ./cmd/fhirload

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/fhirload /usr/local/bin/fhirload
COPY --from=build /src/pipeline.yaml /etc/fhirload/pipeline.yaml
COPY --from=build /src/mappings /etc/fhirload/mappings
USER nonroot:nonroot
WORKDIR /var/lib/fhirload
ENTRYPOINT ["/usr/local/bin/fhirload"]
CMD ["version"]
