package api

import (
	"net/http"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
)

// sandboxMetrics answers a running sandbox's current CPU, memory and disk
// usage, read live from envd in the guest. Another team's or a missing
// sandbox is 404; one that is not running is 409.
func (s *server) sandboxMetrics(w http.ResponseWriter, r *http.Request) error {
	sb, err := s.svc.GetSandbox(r.Context(), principalFrom(r.Context()), r.PathValue("id"))
	if err != nil {
		return err
	}
	if sb.Status != sbx.StateRunning {
		return service.Conflict("sandbox %s is %s, not running", sb.ID, sb.Status)
	}
	if s.metrics == nil {
		return service.Unavailable("sandbox metrics are not configured", nil)
	}
	m, err := s.metrics.SandboxMetrics(r.Context(), sb)
	if err != nil {
		return service.Unavailable("sandbox metrics unavailable", err)
	}
	const mb = 1 << 20
	writeJSON(w, http.StatusOK, apiwire.Metrics{
		Timestamp: m.Timestamp.UTC(), CPUCount: m.CPUCount, CPUUsedPct: m.CPUUsedPct,
		MemUsedMB: m.MemUsed / mb, MemTotalMB: m.MemTotal / mb,
		DiskUsedMB: m.DiskUsed / mb, DiskTotalMB: m.DiskTotal / mb,
	})
	return nil
}
