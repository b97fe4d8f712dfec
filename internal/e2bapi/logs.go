package e2bapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/service"
)

// Sandbox logs: the guest console (kernel boot, init, envd), read from the
// sandbox's host through its agent. Console lines carry no time of their
// own, so each line's timestamp is an ordering key: the sandbox's creation
// time plus the line's index in milliseconds. E2B's start and cursor
// (milliseconds) page by it.

type logLineJSON struct {
	Timestamp time.Time `json:"timestamp"`
	Line      string    `json:"line"`
}

type sandboxLogJSON struct {
	Timestamp time.Time         `json:"timestamp"`
	Level     string            `json:"level"`
	Message   string            `json:"message"`
	Fields    map[string]string `json:"fields"`
}

// maxLogLines is E2B's page bound (and default).
const maxLogLines = 1000

func (s *server) logRoutes() []route {
	return []route{
		{"GET /sandboxes/{id}/logs", s.logsV1},
		{"GET /v2/sandboxes/{id}/logs", s.logsV2},
	}
}

func logQueryInt(q string, name string, def, hi int64) (int64, error) {
	v := q
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || (hi > 0 && n > hi) {
		if hi > 0 {
			return 0, errStatus(http.StatusBadRequest, "%s: must be between 0 and %d", name, hi)
		}
		return 0, errStatus(http.StatusBadRequest, "%s: must be a non-negative integer", name)
	}
	return n, nil
}

// logPage reads lines [from, from+limit) and their timestamps.
func (s *server) logPage(r *http.Request, p service.Principal, cursorMs int64, limit int, backward bool) ([]logLineJSON, error) {
	id := r.PathValue("id")
	sb, err := s.svc.GetSandbox(r.Context(), p, id)
	if err != nil {
		return nil, err
	}
	base := sb.CreatedAt.UnixMilli()
	from := 0
	if cursorMs > base {
		from = int(min(cursorMs-base, 1<<30))
	}
	if backward {
		// The limit lines before the cursor (0: the end), oldest first.
		all, err := s.svc.SandboxLogLines(r.Context(), p, id, 0, 0)
		if err != nil {
			return nil, err
		}
		end := len(all)
		if cursorMs > 0 {
			end = min(end, from)
		}
		start := max(0, end-limit)
		return linesAt(all[start:end], base, start), nil
	}
	lines, err := s.svc.SandboxLogLines(r.Context(), p, id, from, limit)
	if err != nil {
		return nil, err
	}
	return linesAt(lines, base, from), nil
}

func linesAt(lines []string, baseMs int64, first int) []logLineJSON {
	out := make([]logLineJSON, len(lines))
	for i, l := range lines {
		out[i] = logLineJSON{Timestamp: time.UnixMilli(baseMs + int64(first+i)).UTC(), Line: l}
	}
	return out
}

func entries(lines []logLineJSON) []sandboxLogJSON {
	out := make([]sandboxLogJSON, len(lines))
	for i, l := range lines {
		out[i] = sandboxLogJSON{Timestamp: l.Timestamp, Level: "info", Message: l.Line, Fields: map[string]string{"source": "console"}}
	}
	return out
}

func (s *server) logsV1(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	q := r.URL.Query()
	start, err := logQueryInt(q.Get("start"), "start", 0, 0)
	if err != nil {
		return err
	}
	limit, err := logQueryInt(q.Get("limit"), "limit", maxLogLines, maxLogLines)
	if err != nil {
		return err
	}
	lines, err := s.logPage(r, p, start, int(limit), false)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"logs": lines, "logEntries": entries(lines)})
	return nil
}

func (s *server) logsV2(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	q := r.URL.Query()
	cursor, err := logQueryInt(q.Get("cursor"), "cursor", 0, 0)
	if err != nil {
		return err
	}
	limit, err := logQueryInt(q.Get("limit"), "limit", maxLogLines, maxLogLines)
	if err != nil {
		return err
	}
	dir := q.Get("direction")
	if dir != "" && dir != "forward" && dir != "backward" {
		return errStatus(http.StatusBadRequest, "direction: must be forward or backward")
	}
	switch q.Get("level") {
	case "", "debug", "info":
	case "warn", "error":
		// Console lines are all info.
		writeJSON(w, http.StatusOK, map[string]any{"logs": []sandboxLogJSON{}})
		return nil
	default:
		return errStatus(http.StatusBadRequest, "level: must be debug, info, warn or error")
	}
	lines, err := s.logPage(r, p, cursor, int(limit), dir == "backward")
	if err != nil {
		return err
	}
	if search := q.Get("search"); search != "" {
		kept := lines[:0]
		for _, l := range lines {
			if strings.Contains(l.Line, search) {
				kept = append(kept, l)
			}
		}
		lines = kept
	}
	writeJSON(w, http.StatusOK, map[string]any{"logs": entries(lines)})
	return nil
}
