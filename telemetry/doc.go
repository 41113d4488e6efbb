// Package telemetry sets up OpenTelemetry for a thaw process: metrics
// through OpenTelemetry's Prometheus exporter (served on /metrics), and
// traces through OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set. Packages create their own
// instruments from the providers installed here.
package telemetry
