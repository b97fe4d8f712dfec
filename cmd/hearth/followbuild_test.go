package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
)

// followBuild follows again from the last line shown when the log stream
// ends before the build (a server or proxy time limit): every line once,
// then the finished build.
func TestFollowBuildResumes(t *testing.T) {
	lines := []apiwire.BuildLog{
		{Seq: 1, Message: "first"}, {Seq: 2, Message: "second"}, {Seq: 3, Message: "third"},
	}
	var follows, gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/logs"):
			n := follows.Add(1)
			after := r.URL.Query().Get("after")
			w.Header().Set("Content-Type", "application/x-ndjson")
			enc := json.NewEncoder(w)
			if n == 1 && after == "0" { // cut after two lines
				_ = enc.Encode(lines[0])
				_ = enc.Encode(lines[1])
				return
			}
			if after != "2" {
				t.Errorf("follow %d after %q, want after 2", n, after)
			}
			_ = enc.Encode(lines[2])
		default:
			status := "building"
			if gets.Add(1) > 1 {
				status = "ready"
			}
			_ = json.NewEncoder(w).Encode(apiwire.Build{ID: "b1", Template: "web", Status: status})
		}
	}))
	defer srv.Close()
	c := cli.NewClient(srv.URL, "e2b_"+strings.Repeat("0", 40), "")
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := followBuild(ctx, c, &out, apiwire.Build{ID: "b1", Template: "web", Status: "building"}, false)
	if err != nil || b.Status != "ready" {
		t.Fatalf("followBuild: %+v, %v", b, err)
	}
	for _, m := range []string{"first", "second", "third"} {
		if strings.Count(out.String(), m) != 1 {
			t.Errorf("%q shown %d times:\n%s", m, strings.Count(out.String(), m), out.String())
		}
	}
	if follows.Load() != 2 {
		t.Errorf("%d follows, want 2", follows.Load())
	}
}
