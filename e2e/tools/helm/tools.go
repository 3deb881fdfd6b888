//go:build tools

// Pins helm (installs Thicket's chart in the end-to-end tests).
package tools

import _ "helm.sh/helm/v3/cmd/helm"
