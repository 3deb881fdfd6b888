//go:build tools

// Pins local-path-provisioner (the cluster's default StorageClass, as kind ships it; run as a
// host process by e2e/cluster).
package tools

import _ "github.com/rancher/local-path-provisioner"
