//go:build tools

package tools

import _ "github.com/cometbft/cometbft/cmd/cometbft"
