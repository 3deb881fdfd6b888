//go:build tools

// Pins CoreDNS (cluster DNS, run as a host process by e2e/cluster).
package tools

import _ "github.com/coredns/coredns"
