package e2bapi

import "github.com/hearth-sandbox/hearth/internal/sandboxmetrics"

// EnvdMetrics reads metrics from envd's GET /metrics inside the sandbox,
// sent in-process through Proxy (the sandbox traffic handler) with the
// sandbox's access token. It is the reader shared with the native API.
type EnvdMetrics = sandboxmetrics.Reader

var _ MetricsSource = EnvdMetrics{}
