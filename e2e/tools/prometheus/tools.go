//go:build tools

// Pins Prometheus and promtool, built with Kubernetes service discovery only (Debian's package
// is built without it); and the Prometheus operator's API types with controller-gen, which
// writes their CRDs (ServiceMonitor, PodMonitor, PrometheusRule) for the e2e cluster.
package tools

import (
	_ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)
