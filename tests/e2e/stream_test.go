//go:build vm

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The REST API streams exec output from a real VM: with Accept:
// application/x-ndjson, "first" arrives as its own event before "second"
// and before the exit line (ordering, not timing: the command sleeps only
// so that its two writes are separate).
func TestRESTExecStream(t *testing.T) {
	a := newAPI(t)
	sb := a.create(map[string]any{"template": "tiny"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	body, _ := json.Marshal(map[string]any{"cmd": "sh", "args": []string{"-c", "echo first; sleep 1; echo second"}})
	req, err := http.NewRequestWithContext(ctx, "POST", stack.URL+"/v1/sandboxes/"+sb.ID+"/exec", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", a.key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	type event struct {
		Type     string `json:"type"`
		Data     string `json:"data"`
		ExitCode *int   `json:"exit_code"`
		Message  string `json:"message"`
	}
	var (
		events []event
		stdout strings.Builder
		// firstAt, secondAt: the event index at which stdout first held
		// that word.
		firstAt, secondAt = -1, -1
	)
	rd := bufio.NewReader(resp.Body)
	for {
		line, err := rd.ReadBytes('\n')
		if err == io.EOF && len(line) == 0 {
			break
		}
		if err != nil {
			t.Fatalf("read event: %v (after %+v)", err, events)
		}
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("event %q: %v", line, err)
		}
		events = append(events, ev)
		if ev.Type == "stdout" {
			stdout.WriteString(ev.Data)
		}
		if firstAt < 0 && strings.Contains(stdout.String(), "first\n") {
			firstAt = len(events) - 1
		}
		if secondAt < 0 && strings.Contains(stdout.String(), "second\n") {
			secondAt = len(events) - 1
		}
	}
	if len(events) == 0 {
		t.Fatal("no events")
	}
	last := events[len(events)-1]
	if last.Type != "exit" || last.ExitCode == nil || *last.ExitCode != 0 {
		t.Fatalf("last event %+v, want exit 0 (events %+v)", last, events)
	}
	for i, ev := range events[:len(events)-1] {
		if ev.Type != "stdout" {
			t.Errorf("event %d is %+v, want only stdout before the exit", i, ev)
		}
	}
	if stdout.String() != "first\nsecond\n" || firstAt < 0 || secondAt <= firstAt {
		t.Fatalf("stdout %q: first complete at event %d, second at %d; want first in an earlier event (events %+v)", stdout.String(), firstAt, secondAt, events)
	}
	t.Logf("%d events: %+v", len(events), events)
}
