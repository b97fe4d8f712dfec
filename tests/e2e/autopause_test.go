//go:build vm

package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// A sandbox with auto_pause is paused (not destroyed) at its timeout, and
// with auto_resume the next request to it resumes it, state intact.
func TestAutoPauseAndResume(t *testing.T) {
	a := newAPI(t)
	sb := a.create(map[string]any{"template": "tiny", "timeout_s": 2, "auto_pause": true, "auto_resume": true})
	if r := a.exec(sb.ID, "sh", "-c", "echo kept > /tmp/state"); r.ExitCode != 0 {
		t.Fatalf("write state: %+v", r)
	}
	deadline := time.Now().Add(time.Minute) // failure guard, not a speed check
	for {
		var got sandbox
		if code := a.do("GET", "/v1/sandboxes/"+sb.ID, nil, &got); code != http.StatusOK {
			t.Fatalf("get: status %d (an auto-pause sandbox must not be destroyed)", code)
		}
		if got.Status == "paused" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %q a minute after its 2 s timeout", got.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if left := traces(t, sb.ID); hasProcess(left) {
		t.Fatalf("a paused sandbox still has a VMM process: %v", left)
	}
	// The next request resumes it.
	r := a.exec(sb.ID, "cat", "/tmp/state")
	if r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "kept" {
		t.Fatalf("exec after auto-pause: %+v", r)
	}
	var got sandbox
	if a.do("GET", "/v1/sandboxes/"+sb.ID, nil, &got); got.Status != "running" {
		t.Fatalf("status after auto-resume: %q, want running", got.Status)
	}
}

func hasProcess(traces []string) bool {
	for _, s := range traces {
		if strings.HasPrefix(s, "process ") {
			return true
		}
	}
	return false
}
